"""A LangChain chat model over a local transformers model, streaming token by token.

Generation runs in a worker thread and hands text to the caller through ``TextIteratorStreamer``. One lock per
loaded model serialises generation: on a 2-core CPU two concurrent decodes only slow each other down.

A caller that goes away frees the model at once: generation ends at the next token once the caller's stop
event (:mod:`chatbot.cancel`) is set, or this stream is closed.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk
from pydantic import Field

from chatbot.cancel import STOP
from chatbot.chat_model import AnswerSignals, ChatBackend, report
from chatbot.prompt import ABSTAIN
from chatbot.settings import GenerationSettings, SettingsError
from finetune.decoding import (
    DRAFT_TOKENS,
    Decoding,
    Draft,
    TokenBytes,
    answer_processor_list,
    best_draft,
    first_hesitation,
    quote_rule,
    token_bytes,
)
from finetune.device import model_device, to_device

_ROLES = {"human": "user", "ai": "assistant", "system": "system"}


def to_chat_dicts(messages: list[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages as the ``[{"role", "content"}]`` list that chat templates take."""
    return [{"role": _ROLES.get(m.type, m.type), "content": str(m.content)} for m in messages]


def generate_kwargs(gen: GenerationSettings, tokenizer: Any) -> dict[str, Any]:
    """``model.generate`` arguments for ``gen``; temperature 0 means greedy decoding."""
    sample = gen.temperature > 0
    kwargs: dict[str, Any] = {
        "max_new_tokens": gen.max_new_tokens,
        "do_sample": sample,
        "num_beams": gen.num_beams,
        "repetition_penalty": gen.repetition_penalty,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    if sample:
        kwargs.update(temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k)
    return kwargs


def abstention_starts(tokenizer: Any) -> list[int]:
    """The first token of each language's abstention sentence, as the answer's first token."""
    return [tokenizer.encode(text, add_special_tokens=False)[0] for text in ABSTAIN.values()]


def abstention_openings(tokenizer: Any) -> list[tuple[int, int]]:
    """The first two tokens of each language's abstention sentence: the second tells the sentence from an
    answer that starts with the same token (Spanish "No"; see :class:`finetune.decoding.FirstTokenBias`)."""
    ids = [tokenizer.encode(text, add_special_tokens=False) for text in ABSTAIN.values()]
    return [(i[0], i[1]) for i in ids if len(i) > 1]


def answer_processors(
    gen: GenerationSettings,
    prompt_length: int,
    abstain_ids: list[int] | None = None,
    sources: Sequence[str] = (),
    pieces: TokenBytes | None = None,
    openings: Sequence[tuple[int, int]] = (),
) -> list[Any]:
    """The logits processors ``gen`` asks for, for a prompt of ``prompt_length`` tokens (``abstain_ids``: the
    abstention sentences' first tokens, for ``abstain_bias``; ``openings``: their first two). They take torch
    tensors or numpy arrays alike: the llama.cpp engine's sampler (:class:`finetune.decoding.Sampler`) runs
    the very same ones."""
    from transformers import LogitsProcessorList

    return LogitsProcessorList(
        answer_processor_list(decoding_of(gen), prompt_length, abstain_ids, sources, pieces, openings)
    )


def decoding_of(gen: GenerationSettings) -> Decoding:
    """The part of ``gen`` that chooses tokens, as the engine's process takes it."""
    return Decoding(**{k: getattr(gen, k) for k in Decoding.__dataclass_fields__})


def drafting(gen: GenerationSettings, sources: Sequence[str], stop: list[str] | None) -> bool:
    """Whether an answer is drafted several times under the quoting rule (``generation.drafts``)."""
    return bool(decoding_of(gen).drafting and gen.extractive and sources and gen.num_beams == 1 and not stop)


def draft_answers(
    model: Any,
    tok: Any,
    inputs: dict[str, Any],
    gen: GenerationSettings,
    args: dict[str, Any],
    sources: Sequence[str],
    signals: AnswerSignals | None = None,
) -> list[Draft]:
    """The drafts of an answer as :mod:`finetune.llamacpp`'s engine writes them: a greedy answer under the
    quoting rule, then one from each other first token that starts a quote (only the first when the model
    declines); :func:`finetune.decoding.best_draft` chooses among them. A first draft still going after
    ``DRAFT_TOKENS`` is returned alone, unfinished (the caller streams the rest); a later one is dropped.
    ``signals`` gets the model's hesitation at the first position."""
    import copy

    import torch

    length = int(inputs["input_ids"].shape[1])
    abstain, openings, pieces = abstention_starts(tok), abstention_openings(tok), token_bytes(tok)
    eos = tok.eos_token_id
    stops = set(eos if isinstance(eos, list) else [eos])
    # the prompt is read once: each draft starts from a copy of its cache (all but the last prompt token, which
    # generate must be given to compute the first answer token's logits)
    cache = None
    if length > 1:
        with torch.no_grad():
            cache = model(input_ids=inputs["input_ids"][:, :-1], use_cache=True).cache

    budget = min(gen.max_new_tokens, DRAFT_TOKENS)

    def draft(ids: Any) -> tuple[Any, list[int], list[float], Any, bool]:
        processors = answer_processors(gen, length, abstain, sources, pieces, openings)
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            cache=copy.deepcopy(cache) if cache is not None else None,
            **{**args, "max_new_tokens": budget - (ids.shape[1] - length), "logits_processor": processors},
            return_dict_in_generate=True,
            output_logits=True,
        )
        tokens, logprobs = [], []
        for step, token in zip(out.logits, out.sequences[0, ids.shape[1] :].tolist(), strict=False):
            if token in stops:
                break
            tokens.append(token)
            logprobs.append(float(torch.log_softmax(step[0].float(), -1)[token]))
        longer = len(tokens) + ids.shape[1] - length >= DRAFT_TOKENS and gen.max_new_tokens > DRAFT_TOKENS
        return processors, tokens, logprobs, out.logits[0][0], longer

    processors, tokens, logprobs, first_logits, longer = draft(inputs["input_ids"])
    if signals is not None:
        signals.hesitation = first_hesitation(processors)
    quote = quote_rule(processors)
    drafts = [Draft(tokens, logprobs, finished=not longer)]
    if quote is None or not tokens or longer:
        return drafts
    first = torch.log_softmax(first_logits.float(), -1)
    for token in quote.alternatives(tokens[0], gen.drafts - 1):
        start = torch.tensor([[token]], device=inputs["input_ids"].device)
        more, more_logprobs, longer = [], [], False
        if budget > 1:
            _, more, more_logprobs, _, longer = draft(torch.cat([inputs["input_ids"], start], dim=1))
        if not longer:
            drafts.append(Draft([token, *more], [float(first[token]), *more_logprobs]))
    return drafts


class _StopFlag:
    """A stopping criterion that ends generation once the consumer has gone away (``event``, set when our
    stream is closed) or asked to stop (``outer``, from :data:`STOP`)."""

    def __init__(self, outer: threading.Event | None = None) -> None:
        self.event = threading.Event()
        self.outer = outer

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
        return self.event.is_set() or (self.outer is not None and self.outer.is_set())


@contextlib.contextmanager
def _turn(lock: threading.Lock, flag: _StopFlag) -> Iterator[bool]:
    """Hold ``lock`` (one answer at a time on the in-process model) once it is free: True; or False as soon as
    the caller stops waiting (a client that went away frees its API slot now, not when the answer before its
    own is done)."""
    while not lock.acquire(timeout=0.05):
        if flag(None, None):
            yield False
            return
    try:
        yield True
    finally:
        lock.release()


class LocalChatModel(ChatBackend):
    """Chat model backed by a :class:`~finetune.models.Generator` (transformers, in-process)."""

    generator: Any = Field(exclude=True, description="The loaded finetune.models.Generator.")
    lock: Any = Field(default_factory=threading.Lock, exclude=True)

    @property
    def _llm_type(self) -> str:
        return "local-transformers"

    def encode(self, messages: list[BaseMessage]) -> dict[str, Any]:
        """Apply the chat template and put every input tensor on the model's device."""
        tok = self.generator.tokenizer
        enc = tok.apply_chat_template(
            to_chat_dicts(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        return to_device(enc, model_device(self.generator.model))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        generation: GenerationSettings | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        gen = generation or self.generation
        tok, model = self.generator.tokenizer, self.generator.model
        inputs = self.encode(messages)
        args = generate_kwargs(gen, tok)
        sources = kwargs.get("sources") or ()
        args["logits_processor"] = answer_processors(
            gen,
            int(inputs["input_ids"].shape[1]),
            abstention_starts(tok),
            sources,
            token_bytes(tok) if sources and gen.extractive else None,
            abstention_openings(tok),
        )
        if stop:
            args.update(stop_strings=stop, tokenizer=tok)
        flag = _StopFlag(STOP.get())
        args["stopping_criteria"] = StoppingCriteriaList([flag])
        signals = AnswerSignals()
        with _turn(self.lock, flag) as ours:
            if not ours or flag(None, None):  # stopped while waiting for the model
                return
            try:
                # drafts are compared at the end: nothing to stream before
                if drafting(gen, sources, stop):
                    drafts = draft_answers(model, tok, inputs, gen, args, sources, signals)
                    if drafts[0].finished:
                        best = best_draft(
                            drafts,
                            token_bytes(tok),
                            kwargs.get("question") or "",
                            sources,
                            gen.support_weight,
                        )
                        yield self._chunk(tok.decode(best.tokens, skip_special_tokens=True), run_manager)
                        return
                    # a long answer: what the first draft wrote is sent, and the rest streamed as it is written
                    written = drafts[0].tokens
                    yield self._chunk(tok.decode(written, skip_special_tokens=True), run_manager)
                    ids = torch.cat(
                        [inputs["input_ids"], torch.tensor([written], device=inputs["input_ids"].device)], 1
                    )
                    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
                    args["max_new_tokens"] = gen.max_new_tokens - len(written)
                if gen.num_beams > 1:  # beam search cannot stream: the best beam is known only at the end
                    out = model.generate(**inputs, **args)
                    text = tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
                    yield self._chunk(text, run_manager)
                    return
                streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=600)
                failed: list[BaseException] = []

                def generate() -> None:
                    try:
                        model.generate(**inputs, **args, streamer=streamer)
                    except BaseException as exc:  # re-raised below; ending the stream now, not at its timeout
                        failed.append(exc)
                        streamer.end()

                worker = threading.Thread(target=generate, daemon=True, name="generate")
                worker.start()
                try:
                    for text in streamer:
                        if text:
                            yield self._chunk(text, run_manager)
                finally:
                    flag.event.set()  # the consumer stopped early: end generation at the next token
                    worker.join()
                if failed:
                    raise failed[0]
            finally:  # the drafts' hesitation, or else that of the one generation (its first position)
                hesitation = signals.hesitation
                if hesitation is None:
                    hesitation = first_hesitation(args["logits_processor"])
                report(kwargs, hesitation)

    def answering_model(self) -> str:
        return self.generator.name

    def context_window(self) -> int:
        return self.generator.context_window

    def count_tokens(self, messages: list[BaseMessage]) -> int:
        """Tokens of ``messages`` once the chat template is applied (generation prompt included)."""
        return int(self.encode(messages)["input_ids"].shape[1])

    def count_answer_tokens(self, text: str, pieces: int) -> int:
        """By the tokenizer: the streamer hands out whole words, not tokens."""
        return len(self.generator.tokenizer(text, add_special_tokens=False)["input_ids"])

    def busy(self) -> bool:
        return self.lock.locked()


class _Detokenizer:
    """Text of a growing list of token ids, handed out as it becomes final: nothing while the last token ends
    inside a UTF-8 character, and nothing that could still turn into one of the ``stop`` strings."""

    def __init__(self, tokenizer: Any, stop: list[str] | None) -> None:
        self.tokenizer, self.stop = tokenizer, [s for s in (stop or []) if s]
        self.ids: list[int] = []
        self.prefix = self.read = 0  # incremental decoding: only the last few tokens are decoded again
        self.text = ""  # decoded so far
        self.sent = 0  # characters of it already handed out
        self.stopped = False

    def add(self, token: int) -> str:
        self.ids.append(token)
        decode = self.tokenizer.decode
        before = decode(self.ids[self.prefix : self.read], skip_special_tokens=True)
        after = decode(self.ids[self.prefix :], skip_special_tokens=True)
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""  # a special token, or the middle of a UTF-8 character
        self.text += after[len(before) :]
        self.prefix, self.read = self.read, len(self.ids)
        return self._release(self.text, final=False)

    def flush(self) -> str:
        return self._release(self.text, final=True)

    def _release(self, text: str, final: bool) -> str:
        if self.stopped:
            return ""
        end = len(text)
        for stop in self.stop:
            found = text.find(stop, max(0, self.sent - len(stop)))
            if found >= 0:
                end, self.stopped = min(end, found), True
        if not self.stopped and not final:
            for stop in self.stop:  # hold back a tail that may be the start of a stop string
                for n in range(min(len(stop) - 1, len(text)), 0, -1):
                    if text.endswith(stop[:n]):
                        end = min(end, len(text) - n)
                        break
        piece = text[self.sent : max(end, self.sent)]
        self.sent = max(end, self.sent)
        return piece


class EngineChatModel(ChatBackend):
    """Chat model served by the llama.cpp engine (:class:`finetune.llamacpp.Engine`): the prompt is tokenised
    here with the model's own tokenizer and chat template, so token counts are exact and the same as the
    transformers path's; tokens are chosen in the engine by :class:`finetune.llamacpp.Sampling` from this backend's generation settings."""

    engine: Any = Field(
        exclude=True, description="The finetune.llamacpp.EngineProcess (or Engine) serving the GGUF file."
    )
    tokenizer: Any = Field(exclude=True)
    name: str
    window: int
    min_new_tokens: int = Field(0, description="End of sequence is suppressed before this many (benchmarks).")

    @property
    def _llm_type(self) -> str:
        return "local-llama.cpp"

    def beam_search(self) -> bool:
        return False

    def encode(self, messages: list[BaseMessage]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(
            to_chat_dicts(messages), add_generation_prompt=True, tokenize=True, return_dict=False
        )
        return list(ids["input_ids"] if isinstance(ids, dict) else ids)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        generation: GenerationSettings | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        from finetune.llamacpp import Request, Sampling

        gen = generation or self.generation
        if gen.num_beams > 1:
            raise SettingsError(
                "num_beams > 1 (beam search) needs models.engine = 'transformers'; llama.cpp decodes one beam"
            )
        outer = STOP.get()
        if outer is not None and outer.is_set():
            return
        prompt = self.encode(messages)
        eos = self.tokenizer.eos_token_id
        stop_ids = frozenset([eos] if isinstance(eos, int) else eos or [])
        sampling = Sampling(
            decoding_of(gen),
            tuple(abstention_starts(self.tokenizer)),
            suppress_before=self.min_new_tokens,
            sources=tuple(kwargs.get("sources") or ()) if gen.extractive else (),
            question=kwargs.get("question") or "",
            abstain_openings=tuple(abstention_openings(self.tokenizer)),
        )
        request = Request(prompt, sampling, gen.max_new_tokens, stop_ids)
        self.engine.submit(request)  # EngineBusy when every slot is taken and the queue is full
        text = _Detokenizer(self.tokenizer, stop)
        try:
            while not text.stopped:
                try:
                    item = request.out.get(timeout=0.05)
                except queue.Empty:
                    if outer is not None and outer.is_set():
                        return
                    continue
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                if piece := text.add(item):
                    yield self._chunk(piece, run_manager)
                if outer is not None and outer.is_set():
                    return
            if piece := text.flush():
                yield self._chunk(piece, run_manager)
            report(kwargs, request.hesitation)
        finally:
            request.cancel()  # a no-op once finished; else the engine frees the slot at its next step

    def answering_model(self) -> str:
        return self.name

    def context_window(self) -> int:
        return self.window

    def count_tokens(self, messages: list[BaseMessage]) -> int:
        """Tokens of ``messages`` once the chat template is applied (generation prompt included): exactly
        what the engine is given."""
        return len(self.encode(messages))

    def count_answer_tokens(self, text: str, pieces: int) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def busy(self) -> bool:
        return self.engine.busy

    def close(self) -> None:
        self.engine.close()
