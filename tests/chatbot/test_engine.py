"""The llama.cpp engine on the tiny random Llama: conversion to GGUF, the same tokens as transformers, continuous
batching, cancellation, a full queue, a version switch, and the fallback to transformers."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from langchain_core.messages import HumanMessage, SystemMessage
from transformers import AutoModelForCausalLM, AutoTokenizer

from chatbot.backends import build_llm, engine_refusal
from chatbot.cancel import STOP
from chatbot.llm import EngineChatModel, LocalChatModel, _Detokenizer, answer_processors, decoding_of
from chatbot.service import ChatService
from chatbot.settings import GenerationSettings
from finetune.gguf_export import ConversionError, write_gguf
from finetune.llamacpp import Engine, EngineBusy, Request, Sampling
from finetune.models import engine_dir, engine_status, load_engine_model, load_generator
from finetune.registry import Registry

pytest.importorskip(
    "ik_llama_cpp", reason="the llama.cpp engine is installed with the project on Linux x86_64"
)

PROMPT = "Index a folder with chatbot index, then ask a question"


def engine_sampler(
    gen: GenerationSettings, prompt: list[int], abstain_ids: list[int], seed: int | None = None
):
    """The sampler the engine builds for a chat request (:class:`Sampling`), for ``gen``."""
    return Sampling(decoding_of(gen), tuple(abstain_ids), seed).sampler(prompt, frozenset())


def _greedy(logits: np.ndarray, answer: list[int]) -> int:
    return int(np.argmax(logits))


@pytest.fixture(scope="module")
def tiny(tiny_llm_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llm_dir).eval()
    return model, AutoTokenizer.from_pretrained(tiny_llm_dir)


@pytest.fixture(scope="module")
def tiny_gguf(tiny, tiny_llm_dir, tmp_path_factory):
    model, _ = tiny
    return write_gguf(model, tiny_llm_dir, tmp_path_factory.mktemp("gguf") / "tiny.f32.gguf", "f32")


def _transformers_greedy(model, ids: list[int], n: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0
        )
    return out[0, len(ids) :].tolist()


def _run(engine: Engine, ids: list[int], n: int, sampler=_greedy) -> list[int]:
    return list(engine.submit(Request(ids, sampler, n, frozenset())).tokens())


def test_a_converted_tiny_llama_decodes_the_tokens_transformers_decodes(tiny, tiny_gguf):
    model, tok = tiny
    ids = tok(PROMPT)["input_ids"]
    engine = Engine(tiny_gguf, window=256, slots=2)
    try:
        assert engine.n_vocab == model.config.vocab_size and engine.trained_context == 512
        assert _run(engine, ids, 24) == _transformers_greedy(model, ids, 24)
    finally:
        engine.close()


@pytest.mark.parametrize("quantization", ["q8_0", "f16"])
def test_quantized_conversions_load_and_stay_close(tiny, tiny_llm_dir, tmp_path, quantization):
    model, tok = tiny
    path = write_gguf(model, tiny_llm_dir, tmp_path / f"tiny.{quantization}.gguf", quantization)
    assert not list(tmp_path.glob(".*tmp"))  # written beside, then renamed
    ids = tok(PROMPT)["input_ids"]
    engine = Engine(path, window=256, slots=1)
    try:
        got = _run(engine, ids, 8)
    finally:
        engine.close()
    assert len(got) == 8 and got[0] == _transformers_greedy(model, ids, 1)[0]


def test_answers_batched_together_equal_answers_alone(tiny, tiny_gguf):
    model, tok = tiny
    prompts = [tok(p)["input_ids"] for p in (PROMPT, "The library opens at nine", "El asistente responde")]
    engine = Engine(tiny_gguf, window=256, slots=4)
    try:
        alone = [_run(engine, ids, 16) for ids in prompts]
        requests = [engine.submit(Request(ids, _greedy, 16, frozenset())) for ids in prompts]
        together = [list(r.tokens()) for r in requests]
    finally:
        engine.close()
    assert together == alone
    assert alone == [_transformers_greedy(model, ids, 16) for ids in prompts]


def test_a_cancelled_answer_frees_its_slot_at_once_and_a_full_queue_answers_busy(long_llm_dir, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(long_llm_dir)
    path = write_gguf(model, long_llm_dir, tmp_path / "long.gguf", "f32")
    engine = Engine(path, slots=1, queue_limit=1)
    try:
        running = engine.submit(Request([5, 6, 7], _greedy, 6000, frozenset()))
        tokens = running.tokens()
        [next(tokens) for _ in range(3)]
        engine.submit(Request([5, 6], _greedy, 4, frozenset()))  # waits for the slot
        with pytest.raises(EngineBusy, match="wait"):
            engine.submit(Request([5], _greedy, 4, frozenset()))
        assert engine.load == (1, 1)
        running.cancel()
        deadline = time.perf_counter() + 5
        while engine.load != (0, 0) and time.perf_counter() < deadline:
            time.sleep(0.01)
        assert engine.load == (0, 0)  # the waiting one ran and finished; the cancelled one stopped early
        assert len(running.generated) < 6000
    finally:
        engine.close()


def test_the_chat_backend_streams_counts_and_stops_like_transformers(settings):
    llm = build_llm(settings)
    assert isinstance(llm, EngineChatModel)
    local = LocalChatModel(generator=load_generator(settings), generation=llm.generation)
    messages = [SystemMessage("Answer briefly."), HumanMessage("Where does the library open?")]
    assert llm.count_tokens(messages) == local.count_tokens(messages)  # exact, the same tokenizer
    gen = GenerationSettings(max_new_tokens=12, no_repeat_ngram_size=0, abstain_bias=0)
    engine_text = "".join(c.content for c in llm.stream(messages, generation=gen))
    local_text = "".join(c.content for c in local.stream(messages, generation=gen))
    assert engine_text == local_text and engine_text
    llm.close()


def test_the_backend_stops_when_the_caller_sets_stop(long_llm_dir, settings):
    long = settings.model_copy(
        update={"models": settings.models.model_copy(update={"generator": str(long_llm_dir)})}
    )
    llm = build_llm(long)
    assert isinstance(llm, EngineChatModel)
    stop = threading.Event()
    token = STOP.set(stop)
    try:
        stream = llm.stream([HumanMessage("go on")], generation=GenerationSettings(max_new_tokens=5000))
        next(stream)
        stop.set()
        rest = list(stream)
    finally:
        STOP.reset(token)
    assert len(rest) < 50
    deadline = time.perf_counter() + 5
    while llm.engine.busy and time.perf_counter() < deadline:
        time.sleep(0.01)
    assert not llm.engine.busy  # the engine's process freed the slot
    llm.close()


def test_the_sampler_runs_the_same_processors_as_transformers():
    gen = GenerationSettings(no_repeat_ngram_size=2, abstain_bias=-5.0, repetition_penalty=1.3)
    prompt, answer = [1, 2, 3], [7, 8, 7]
    logits = np.linspace(-1, 1, 12, dtype=np.float32)
    logits[8] = 5.0  # 7 8 would repeat: banned
    got = engine_sampler(gen, prompt, abstain_ids=[11])(logits.copy(), answer)
    scores = torch.tensor(logits)[None, :]
    ids = torch.tensor([prompt + answer])
    from transformers import RepetitionPenaltyLogitsProcessor

    scores = RepetitionPenaltyLogitsProcessor(1.3)(ids, scores)
    for processor in answer_processors(gen, len(prompt), [11]):
        scores = processor(ids, scores)
    assert got == int(scores.argmax()) and got != 8
    first = engine_sampler(gen, prompt, abstain_ids=[11])
    biased = np.zeros(12, dtype=np.float32)
    biased[11] = 4.0  # the abstention's first token loses its lead at the first position only
    assert first(biased.copy(), []) != 11 and first(biased.copy(), [3]) == 11


def test_sampling_keeps_to_top_k_and_is_seeded():
    gen = GenerationSettings(temperature=1.0, top_k=2, top_p=1.0, no_repeat_ngram_size=0, abstain_bias=0)
    logits = np.array([0.0, 3.0, 2.9, -1.0], dtype=np.float32)
    draws = [engine_sampler(gen, [0], [], seed=s)(logits.copy(), []) for s in range(40)]
    assert set(draws) == {1, 2}
    assert draws == [engine_sampler(gen, [0], [], seed=s)(logits.copy(), []) for s in range(40)]


def test_stop_strings_cut_the_answer(tiny):
    _, tok = tiny
    text = _Detokenizer(tok, stop=["ask"])
    shown = "".join(text.add(t) for t in tok(PROMPT)["input_ids"]) + text.flush()
    assert shown == PROMPT[: PROMPT.index("ask")] and text.stopped


def test_a_promoted_version_gets_its_own_conversion_and_replaces_the_engine(settings, tiny_llm_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    registry = Registry(settings)
    for seed in (1, 2):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(tiny_llm_dir)
        lora = get_peft_model(
            base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        )
        lora.save_pretrained(tmp_path / f"adapter{seed}")
        registry.add(
            tmp_path / f"adapter{seed}",
            kind="lora",
            base_model=str(tiny_llm_dir),
            manifest={},
            settings={},
            metrics={},
        )
    registry.promote("v0001")
    service = ChatService(settings)
    first = service.llm
    assert isinstance(first, EngineChatModel) and first.answering_model().endswith("@v0001")
    assert engine_status(settings, registry.get("v0001")).startswith("gguf q8_0")
    assert engine_status(settings, registry.get("v0002")) == "not converted"
    registry.promote("v0002")
    second = service.llm
    assert second is not first and second.answering_model().endswith("@v0002")
    assert first.engine.proc.wait(10) == 0  # the replaced engine's process ended
    names = sorted(p.name.split("-")[0] for p in engine_dir(settings).glob("*.gguf"))
    assert names == ["v0001", "v0002"]
    # converted once: loading again finds the file
    again = load_engine_model(settings)
    assert (
        again.path.name.startswith("v0002-")
        and again.path.stat().st_mtime == second.engine.path.stat().st_mtime
    )
    second.close()


def test_a_model_that_cannot_convert_is_served_by_transformers(settings, tmp_path, caplog, tiny_llm_builder):
    tiny_llm_builder(tmp_path / "biased", attention_bias=True)
    odd = settings.model_copy(
        update={"models": settings.models.model_copy(update={"generator": str(tmp_path / "biased")})}
    )
    with caplog.at_level(logging.WARNING):
        llm = build_llm(odd)
    assert isinstance(llm, LocalChatModel)
    assert "attention or MLP biases" in caplog.text and "uses transformers" in caplog.text
    with pytest.raises(ConversionError, match="biases"):
        load_engine_model(odd)


def test_auto_chooses_transformers_for_what_only_transformers_does(settings):
    def with_(**models):
        return settings.model_copy(update={"models": settings.models.model_copy(update=models)})

    assert engine_refusal(settings) is None
    assert "transformers" in engine_refusal(with_(engine="transformers"))
    assert "int8" in engine_refusal(with_(quantize="int8"))
    beams = settings.model_copy(
        update={"generation": settings.generation.model_copy(update={"num_beams": 2})}
    )
    assert "beam" in engine_refusal(beams)
    assert isinstance(build_llm(with_(engine="transformers")), LocalChatModel)


def test_a_request_waits_until_the_kv_cache_has_room_for_it(tiny_gguf):
    engine = Engine(tiny_gguf, window=256, pool=256, slots=2)
    try:
        first = engine.submit(Request([5, 6, 7], _greedy, 200, frozenset()))
        second = engine.submit(Request([5, 6], _greedy, 100, frozenset()))  # 103 + 203 tokens > 256
        tokens = first.tokens()
        next(tokens)
        assert engine.load == (1, 1)  # a slot is free, the cache is not
        assert len(list(tokens)) == 199 and len(list(second.tokens())) == 100
    finally:
        engine.close()


def test_the_engine_sampler_stops_the_random_model_looping(tiny, tiny_gguf):
    _, tok = tiny
    ids = tok("library library library")["input_ids"]

    def repeated(answer: list[int]) -> bool:
        grams = [tuple(answer[i : i + 4]) for i in range(len(answer) - 3)]
        return len(grams) != len(set(grams))

    engine = Engine(tiny_gguf, window=256, slots=1)
    try:
        loose = _run(engine, ids, 60, engine_sampler(GenerationSettings(no_repeat_ngram_size=0), ids, []))
        strict = _run(engine, ids, 60, engine_sampler(GenerationSettings(no_repeat_ngram_size=4), ids, []))
    finally:
        engine.close()
    assert repeated(loose) and not repeated(strict) and len(strict) == 60


def test_the_engine_process_starts_again_after_a_crash(settings):
    import os
    import signal

    llm = build_llm(settings)
    messages = [HumanMessage("Where does the library open?")]
    gen = GenerationSettings(max_new_tokens=6)
    first = "".join(c.content for c in llm.stream(messages, generation=gen))
    crashed = llm.engine.proc.pid
    os.kill(crashed, signal.SIGKILL)
    llm.engine.proc.wait(10)
    assert "".join(c.content for c in llm.stream(messages, generation=gen)) == first
    assert llm.engine.proc.pid != crashed
    llm.close()


def test_the_engine_process_ends_quietly_when_the_chat_process_is_gone(tiny_gguf):
    """A chat process killed mid-answer (Ctrl-C on the app): its engine's process ends at its next write, and
    prints no traceback of a broken pipe."""
    script = f"""
import os
from pathlib import Path
from finetune.decoding import Decoding
from finetune.llamacpp import EngineProcess, Request, Sampling
engine = EngineProcess(Path({str(tiny_gguf)!r}), window=512, slots=1)
request = engine.submit(Request([1, 2, 3], Sampling(Decoding(), suppress_before=400), 400, frozenset()))
next(iter(request.tokens()))  # the answer is streaming
os._exit(1)
"""
    root = Path(__file__).resolve().parents[2]
    # stderr is the engine's too: it reaches its end once the engine's process has ended as well
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "decode failed" not in done.stderr, done.stderr


def test_a_full_engine_answers_busy_at_once(long_llm_dir, settings):
    full = settings.model_copy(
        update={
            "models": settings.models.model_copy(
                update={"generator": str(long_llm_dir), "engine_slots": 1, "engine_queue": 0}
            )
        }
    )
    llm = build_llm(full)
    talking = llm.stream([HumanMessage("go on")], generation=GenerationSettings(max_new_tokens=5000))
    next(talking)
    started = time.perf_counter()
    with pytest.raises(EngineBusy, match="try again"):
        list(llm.stream([HumanMessage("me too")], generation=GenerationSettings(max_new_tokens=4)))
    assert time.perf_counter() - started < 2
    talking.close()
    llm.close()


def test_the_api_answers_503_with_retry_after_when_the_engine_is_full():
    from chatbot.api import _failure

    response = _failure(EngineBusy("2 answers are being written and 8 wait; try again shortly"))
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert b"the model is busy" in response.body and b"overloaded" in response.body


def test_a_version_is_converted_with_its_own_base_whatever_the_generator_setting(
    settings, tiny_llm_dir, tmp_path
):
    from finetune.models import _engine_template, embedded_gguf_path

    model = AutoModelForCausalLM.from_pretrained(tiny_llm_dir)
    model.save_pretrained(tmp_path / "full")
    AutoTokenizer.from_pretrained(tiny_llm_dir).save_pretrained(tmp_path / "full")
    version = Registry(settings).add(
        tmp_path / "full", kind="full", base_model=str(tiny_llm_dir), manifest={}, settings={}, metrics={}
    )
    now_embedded = settings.model_copy(
        update={"models": settings.models.model_copy(update={"generator": "embedded"})}
    )
    assert _engine_template(now_embedded, version) is None  # the embedded file's metadata would not fit
    assert _engine_template(now_embedded, None) == embedded_gguf_path()


def test_the_engine_quotes_sources_as_transformers_does(tiny, tiny_gguf):
    """The quoting rule in the engine's process reads token bytes from the GGUF vocabulary: the same bytes as
    the tokenizer's, and the same answer as transformers with the same rule."""
    from finetune.decoding import token_bytes

    model, tok = tiny
    pieces = token_bytes(tok)
    sources = ("The library opens at nine in the morning and closes at eight.", "Museums close on Mondays.")
    gen = GenerationSettings(max_new_tokens=10, abstain_bias=0)
    prompt = tok(PROMPT)["input_ids"]
    engine = Engine(tiny_gguf, window=256, slots=1)
    try:
        assert engine.token_bytes().table == [pieces(t) for t in range(engine.n_vocab)]
        sampling = Sampling(decoding_of(gen), (), sources=sources)
        quoted = list(engine.submit(Request(prompt, sampling, 10, frozenset())).tokens())
    finally:
        engine.close()
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=10,
            min_new_tokens=10,
            do_sample=False,
            pad_token_id=0,
            logits_processor=answer_processors(gen, len(prompt), [], sources, pieces),
        )
    assert quoted == out[0, len(prompt) :].tolist()
    answer = tok.decode(quoted).split("[")[0]
    assert " ".join(answer.lower().split()) in " ".join(sources[0].lower().split()) + " ".join(
        sources[1].lower().split()
    )


def test_the_engine_drafts_and_chooses_as_transformers_does(tiny, tiny_gguf):
    """With drafts, the engine writes an answer from each of the model's best first tokens that start a quote
    (the prompt's cache kept, the answer's dropped between drafts) and sends the best one only: the same
    drafts, scores and choice as the transformers path."""
    from chatbot.llm import draft_answers, generate_kwargs
    from finetune.decoding import best_draft, token_bytes

    model, tok = tiny
    sources = ("The library opens at nine in the morning and closes at eight.", "Museums close on Mondays.")
    question = "When does the library open?"
    gen = GenerationSettings(max_new_tokens=8, abstain_bias=0, drafts=3, support_weight=3.0)
    prompt = tok(PROMPT)["input_ids"]

    def drafting() -> Request:
        sampling = Sampling(decoding_of(gen), (), sources=sources, question=question)
        return Request(prompt, sampling, 8, frozenset())

    engine = Engine(tiny_gguf, window=256, slots=2)
    try:
        request = drafting()
        drafted = list(engine.submit(request).tokens())
        # another request at the same time is not disturbed by a drafting one, nor it by the other
        busy, plain = drafting(), Request(prompt, _greedy, 12, frozenset())
        engine.submit(busy), engine.submit(plain)
        assert list(busy.tokens()) == drafted and list(plain.tokens()) == _transformers_greedy(
            model, prompt, 12
        )
    finally:
        engine.close()
    args = generate_kwargs(gen, tok) | {"pad_token_id": 0, "eos_token_id": None}
    with torch.no_grad():
        expected = draft_answers(model, tok, {"input_ids": torch.tensor([prompt])}, gen, args, sources)
    assert len(expected) == 3 and len({d.tokens[0] for d in expected}) == 3
    assert [d.tokens for d in request.drafts] == [d.tokens for d in expected]
    for mine, theirs in zip(request.drafts, expected, strict=True):
        assert np.allclose(mine.logprobs, theirs.logprobs, atol=1e-3)
    assert drafted == best_draft(expected, token_bytes(tok), question, sources, 3.0).tokens


def test_a_long_answer_is_streamed_without_drafts(tiny, tiny_gguf):
    """Drafts are for short answers: a first draft still going after DRAFT_TOKENS is sent as it is and the
    rest streamed, on both engines, the same tokens as one greedy answer under the quoting rule."""
    from chatbot.llm import LocalChatModel
    from finetune.decoding import DRAFT_TOKENS
    from finetune.models import Generator

    model, tok = tiny
    prompt = tok(PROMPT)["input_ids"]
    n = DRAFT_TOKENS + 12
    # a source that holds the model's own greedy continuation: quoting it lets the answer run past the limit
    source = tok.decode(_transformers_greedy(model, prompt, n + 20))
    one = GenerationSettings(max_new_tokens=n, abstain_bias=0, drafts=1, no_repeat_ngram_size=0)
    three = one.model_copy(update={"drafts": 3})
    engine = Engine(tiny_gguf, window=256, slots=1)
    try:
        answers = {}
        for gen in (one, three):
            request = Request(
                prompt, Sampling(decoding_of(gen), (), sources=(source,), question="q"), n, frozenset()
            )
            answers[gen.drafts] = list(engine.submit(request).tokens())
            assert request.drafts == []  # no draft was kept for choosing
    finally:
        engine.close()
    assert answers[3] == answers[1] and len(answers[1]) > DRAFT_TOKENS
    local = LocalChatModel(generator=Generator(model, tok, torch.device("cpu"), "tiny"), generation=three)
    text = "".join(
        c.content
        for c in local.stream([HumanMessage(PROMPT)], generation=three, sources=[source], question="q")
    )
    streamed = "".join(
        c.content
        for c in local.stream([HumanMessage(PROMPT)], generation=one, sources=[source], question="q")
    )
    assert text == streamed and len(tok(text, add_special_tokens=False)["input_ids"]) > DRAFT_TOKENS


def test_a_prompt_that_starts_like_the_last_one_reads_only_the_rest(tiny, tiny_gguf):
    """The prompt cache: what a new prompt shares with the last one is not read again, and the answers are
    those of prompts read whole (transformers' greedy tokens)."""
    model, tok = tiny
    system = tok(PROMPT + " about the library and its opening hours")["input_ids"]
    first, second = system + [11, 12, 13, 14], system + [21, 22, 23]
    engine = Engine(tiny_gguf, window=256, slots=1)
    try:
        assert _run(engine, first, 12) == _transformers_greedy(model, first, 12) and engine.reused == 0
        assert _run(engine, second, 12) == _transformers_greedy(model, second, 12)
        assert engine.reused == len(system)  # only the three new tokens were read
        assert engine._kept == system  # only the shared beginning stays kept
        assert _run(engine, second, 12) == _transformers_greedy(model, second, 12)
        assert engine.reused == 2 * len(system)
        # another request running meanwhile keeps its own cache: the kept prompt is a copy
        busy = engine.submit(Request(first, _greedy, 40, frozenset()))
        assert _run(engine, second, 12) == _transformers_greedy(model, second, 12)
        assert list(busy.tokens()) == _transformers_greedy(model, first, 40)
    finally:
        engine.close()
    off = Engine(tiny_gguf, window=256, slots=1, prompt_cache=False)
    try:
        assert _run(off, first, 4) == _run(off, first, 4) and off.reused == 0
    finally:
        off.close()


def test_the_kept_prompt_gives_way_to_a_request_that_needs_the_room(tiny, tiny_gguf):
    model, _ = tiny
    engine = Engine(tiny_gguf, window=256, pool=256, slots=1)
    try:
        kept = list(range(5, 155))  # 150 tokens kept after this answer
        assert _run(engine, kept, 10) == _transformers_greedy(model, kept, 10)
        other = list(range(200, 350))  # shares nothing; 150 + 100 + the 150 kept > 256
        assert _run(engine, other, 100) == _transformers_greedy(model, other, 100)
        assert engine.reused == 0
    finally:
        engine.close()


@pytest.mark.parametrize("drafts", [1, 3])
def test_both_backends_report_the_models_hesitation_at_the_first_token(settings, drafts):
    """The hesitation behind an unsure answer (the best abstention token's logit minus the best other
    token's, at the answer's first position, before the bias) comes out of the engine's process and out of
    transformers alike, with and without drafts, as the model's own logits give it."""
    from chatbot.chat_model import AnswerSignals
    from chatbot.llm import abstention_starts

    llm = build_llm(settings)
    assert isinstance(llm, EngineChatModel)
    local = LocalChatModel(generator=load_generator(settings), generation=llm.generation)
    sources = ["The library opens at nine in the morning and closes at eight.", "Museums close on Mondays."]
    messages = [SystemMessage("Answer from the sources."), HumanMessage("[1] " + sources[0] + "\nWhen?")]
    gen = GenerationSettings(max_new_tokens=6, abstain_bias=-1.5, drafts=drafts)
    with torch.no_grad():
        logits = local.generator.model(**local.encode(messages)).logits[0, -1].float()
    abstain = sorted(set(abstention_starts(local.generator.tokenizer)))
    others = logits.clone()
    others[abstain] = float("-inf")
    expected = float(logits[abstain].max() - others.max())
    try:
        for backend in (llm, local):
            signals = AnswerSignals()
            text = "".join(
                c.content
                for c in backend.stream(
                    messages, generation=gen, sources=sources, question="When?", signals=signals
                )
            )
            assert text
            assert signals.hesitation == pytest.approx(expected, abs=1e-3), type(backend).__name__
    finally:
        llm.close()


def test_both_backends_take_the_hesitation_again_after_a_first_token_the_abstention_shares(settings):
    """Pushed to open the abstention sentence (a bias of +20), the answer's first token is one that may also
    start an answer (Spanish "No"): both backends then take the hesitation again at the second position,
    and agree on it."""
    from chatbot.chat_model import AnswerSignals
    from chatbot.llm import abstention_openings, abstention_starts
    from finetune.decoding import second_hesitation

    llm = build_llm(settings)
    local = LocalChatModel(generator=load_generator(settings), generation=llm.generation)
    tok = local.generator.tokenizer
    assert {a for a, _ in abstention_openings(tok)} == set(abstention_starts(tok))
    sources = ["The library opens at nine in the morning and closes at eight.", "Museums close on Mondays."]
    messages = [SystemMessage("Answer from the sources."), HumanMessage("[1] " + sources[0] + "\nWhen?")]
    gen = GenerationSettings(max_new_tokens=6, abstain_bias=20.0, drafts=1)
    with torch.no_grad():
        logits = local.generator.model(**local.encode(messages)).logits[0, -1].float()
    abstain = sorted(set(abstention_starts(tok)))
    # what both should find: the first token is the abstention token the model ranks higher; then the
    # sentence's second token against everything else there
    first = max(abstain, key=lambda t: float(logits[t]))
    inputs = local.encode(messages)
    ids = torch.cat([inputs["input_ids"], torch.tensor([[first]])], dim=1)
    with torch.no_grad():
        after = local.generator.model(input_ids=ids).logits[0, -1].float()
    seconds = [b for a, b in abstention_openings(tok) if a == first]
    expected = second_hesitation(
        torch.log_softmax(logits.double(), -1).numpy(),
        first,
        torch.log_softmax(after.double(), -1).numpy(),
        seconds,
        abstain,
    )
    found = {}
    try:
        for backend in (llm, local):
            signals = AnswerSignals()
            for _ in backend.stream(
                messages, generation=gen, sources=sources, question="When?", signals=signals
            ):
                pass
            found[type(backend).__name__] = signals.hesitation
    finally:
        llm.close()
    for name, hesitation in found.items():
        assert hesitation == pytest.approx(expected, abs=1e-2), name


@pytest.mark.parametrize("stream", [False, True])
def test_beam_search_asked_of_llama_cpp_is_a_400_naming_num_beams(settings, tmp_path, stream):
    """The engine is chosen at start from the settings; a request asking for beams it cannot decode is refused
    before anything streams, naming the field, not failed mid-stream as a server error."""
    from api_helpers import ask
    from fastapi.testclient import TestClient

    from chatbot.api import create_app
    from chatbot.api_keys import ApiKeys
    from chatbot.service import ChatService
    from retrieval.collection import Collection

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "hours.md").write_text("The library opens at nine.", encoding="utf-8")
    Collection.open(settings, settings.chat.collection).sync(tmp_path / "docs")
    service = ChatService(settings)
    assert not service.llm.beam_search()
    _, token = ApiKeys.of(settings.data_dir).create("tester")
    client = TestClient(create_app(service), headers={"Authorization": f"Bearer {token}"})
    r = client.post("/v1/chat/completions", json=ask("When does it open?", num_beams=2, stream=stream))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"].startswith(
        "num_beams=2: beam search needs models.engine = 'transformers'"
    )
    assert client.post("/v1/chat/completions", json=ask("When does it open?", num_beams=1)).status_code == 200


def test_a_caller_waiting_for_the_in_process_model_stops_waiting_when_asked(long_llm_dir, settings):
    """The transformers path answers one question at a time: a caller that goes away while another answer is
    written stops waiting at once (its API slot is free), instead of when that answer is done."""
    long = settings.model_copy(
        update={
            "models": settings.models.model_copy(
                update={"generator": str(long_llm_dir), "engine": "transformers"}
            )
        }
    )
    llm = build_llm(long)
    assert isinstance(llm, LocalChatModel)
    talking = llm.stream([HumanMessage("go on")], generation=GenerationSettings(max_new_tokens=3000))
    next(talking)  # holds the model
    stop, finished = threading.Event(), threading.Event()

    outcome: list[str] = []

    def second() -> None:
        token = STOP.set(stop)
        try:
            list(llm.stream([HumanMessage("me too")], generation=GenerationSettings(max_new_tokens=4)))
        except ValueError as exc:  # LangChain's word for a stream stopped before its first piece
            outcome.append(str(exc))
        finally:
            STOP.reset(token)
            finished.set()

    waiting = threading.Thread(target=second, daemon=True)
    waiting.start()
    try:
        assert not finished.wait(0.5)  # waiting for the model
        stop.set()
        assert finished.wait(2) and llm.busy()  # gone, while the first answer is still being written
    finally:
        talking.close()
    waiting.join()
    assert outcome == ["No generation chunks were returned"]  # it wrote nothing


def test_llama_cpp_warnings_reach_the_log_except_the_ones_no_one_can_act_on(caplog):
    from finetune.llamacpp import _forward_log

    with caplog.at_level(logging.WARNING, logger="finetune.llamacpp"):
        _forward_log(3, b"load: control-looking token:    212 '</s>' was not control-type\n", None)
        _forward_log(3, b"Free memory 0 MiB on device CPU\n", None)
        _forward_log(2, b"an info line\n", None)
        _forward_log(3, b"n_ctx_seq (4096) < n_ctx_train (32768)\n", None)
        _forward_log(4, b"failed to load model\n", None)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "llama.cpp: n_ctx_seq (4096) < n_ctx_train (32768)"),
        ("ERROR", "llama.cpp: failed to load model"),
    ]
