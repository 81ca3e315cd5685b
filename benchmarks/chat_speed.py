"""Time to first token and decode speed of the chat path, side by side with llama.cpp on the same prompt and
machine, and the engine's throughput with several users at once.

    python benchmarks/chat_speed.py [--runs 3] [--new-tokens 96] [--users 4] [--slots 1 2 4] [--json out.json]

Rows, each on the same ~880-token prompt (system prompt, sample passages, question), decoding exactly
``--new-tokens`` tokens (end of sequence suppressed), greedy, median of ``--runs`` runs after a warm-up:
- the chat path on the llama.cpp engine (``models.engine``: ik_llama.cpp, the model's q8_0 GGUF conversion),
  through :class:`chatbot.llm.EngineChatModel` with the chat's own decoding (its logits processors included);
- the chat path on transformers, float32 (``models.engine: transformers``), and with dynamic int8;
- mainline llama.cpp (``pip install -e ".[bench]"``: llama-cpp-python, compiled here) on the same q8_0 file,
  and on the embedded Q4_1 file the model ships as: the reference the engine must match or beat.
Then ``--users`` conversations asking at once through the engine, for each ``--slots`` (answers written at
once; the others wait in the queue): each user's time to first token, and the answer tokens per second of all
of them together (prompts of ~880 tokens each: on 2 cores their prefill is most of the time).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch
from common import emit, machine
from langchain_core.messages import BaseMessage

from chatbot.backends import build_llm
from chatbot.llm import EngineChatModel, LocalChatModel, to_chat_dicts
from chatbot.prompt import build_prompt
from chatbot.settings import GenerationSettings, load_settings
from finetune.models import embedded_gguf_path
from retrieval.types import Hit

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "Which file formats can I index, and what happens when I run the index command again?"
QUESTIONS = [
    QUESTION,
    "How do I delete a collection?",
    "Where are conversations stored?",
    "¿Qué formatos de archivo puedo indexar?",
    "¿Cómo borro una colección?",
    "Who can see my conversations?",
    "What does the assistant do when the documents do not hold the answer?",
    "¿Dónde se guardan los datos?",
]


def context_hits(question: str, target_tokens: int, count_tokens) -> list[Hit]:
    """Passages of the sample collection, added until the sources reach ~target_tokens."""
    paragraphs = []
    for path in sorted((ROOT / "data" / "sample").glob("*.md")):
        paragraphs += [(path.name, p) for p in path.read_text(encoding="utf-8").split("\n\n") if len(p) > 120]
    hits: list[Hit] = []
    for i, (name, text) in enumerate(paragraphs):
        hits.append(Hit(i, text, name, 1.0))
        if (
            count_tokens(build_prompt(question, hits, [], count_tokens, 10**6).messages)
            >= target_tokens + 150
        ):
            break
    return hits


def time_stream(pieces, tokens: int) -> tuple[float, float]:
    """(seconds to the first text, decode tokens/s after it) of a stream that decodes exactly ``tokens``."""
    start = time.perf_counter()
    first = None
    for piece in pieces:
        if piece:
            first = first or time.perf_counter()
    end = time.perf_counter()
    return first - start, (tokens - 1) / (end - first)


def settings_for(engine: str, quantize: str = "none", slots: int | None = None):
    # every run reads the whole prompt, as the mainline llama.cpp rows do (the same prompt would otherwise
    # come from the engine's prompt cache; its effect is measured by benchmarks/grounded_qa.py)
    models = {"device": "cpu", "quantize": quantize, "engine": engine, "engine_prompt_cache": False}
    if slots:
        models["engine_slots"] = slots
    return load_settings(data_dir=Path(tempfile.gettempdir()) / "assistant-bench", models=models)


def bench_chat_path(llm, messages: list[BaseMessage], runs: int, new_tokens: int, name: str) -> dict:
    """The chat backend as the service calls it, with the chat's decoding settings (greedy, the answer-only
    no-repeat rule, the abstention bias) and end of sequence suppressed."""
    gen = GenerationSettings(max_new_tokens=new_tokens)
    if isinstance(llm, LocalChatModel):
        llm.generator.model.generation_config.min_new_tokens = new_tokens
    else:
        llm.min_new_tokens = new_tokens
    results = [
        time_stream((c.content for c in llm.stream(messages, generation=gen)), new_tokens)
        for _ in range(runs + 1)
    ][1:]
    return summarise(name, results)


def bench_llama_cpp(
    path: Path, messages: list[BaseMessage], runs: int, new_tokens: int, name: str
) -> dict | None:
    try:
        from llama_cpp import Llama
    except ImportError:
        print(
            "llama-cpp-python is not installed (pip install -e '.[bench]'): skipping the llama.cpp reference"
        )
        return None
    llm = Llama(model_path=str(path), n_ctx=2048, n_threads=torch.get_num_threads(), verbose=False)
    eos = llm.token_eos()

    def run() -> tuple[float, float]:
        llm.reset()  # no prompt cache reuse between runs: every run evaluates the whole prompt, as ours do
        stream = llm.create_chat_completion(
            to_chat_dicts(messages),
            max_tokens=new_tokens,
            temperature=0.0,
            stream=True,
            logit_bias={eos: -1e9},  # decode exactly new_tokens
        )
        return time_stream((c["choices"][0]["delta"].get("content", "") for c in stream), new_tokens)

    row = summarise(name, [run() for _ in range(runs + 1)][1:])
    llm.close()
    return row


def bench_users(llm: EngineChatModel, prompts: list[list[BaseMessage]], new_tokens: int) -> dict:
    """``len(prompts)`` users asking at the same moment: each one's time to first token, and all tokens
    decoded divided by the time until the last answer ended."""
    gen = GenerationSettings(max_new_tokens=new_tokens)
    llm.min_new_tokens = new_tokens
    ttft: list[float] = [0.0] * len(prompts)
    counts: list[int] = [0] * len(prompts)
    start = threading.Barrier(len(prompts) + 1)

    def user(i: int) -> None:
        start.wait()
        began = time.perf_counter()
        for chunk in llm.stream(prompts[i], generation=gen):
            if chunk.content and not ttft[i]:
                ttft[i] = time.perf_counter() - began
            counts[i] += 1

    threads = [threading.Thread(target=user, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    return {
        "users": len(prompts),
        "ttft_s": [round(t, 2) for t in ttft],
        "ttft_median_s": round(statistics.median(ttft), 2),
        "tokens": sum(counts),
        "total_tokens_per_s": round(sum(counts) / wall, 1),
        "wall_s": round(wall, 2),
    }


def summarise(name: str, results: list[tuple[float, float]]) -> dict:
    row = {
        "variant": name,
        "ttft_s": round(statistics.median(r[0] for r in results), 3),
        "decode_tokens_per_s": round(statistics.median(r[1] for r in results), 1),
        "load_average": machine()["load_average"],
    }
    print(f"{name:44s} TTFT {row['ttft_s']:.2f} s   decode {row['decode_tokens_per_s']:.1f} tok/s")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per variant (after one warm-up)")
    parser.add_argument("--new-tokens", type=int, default=96)
    parser.add_argument("--users", type=int, default=4, help="conversations at once for the engine (0: skip)")
    parser.add_argument(
        "--slots",
        type=int,
        nargs="+",
        default=[1, 2, 4],
        help="models.engine_slots values to try with --users",
    )
    parser.add_argument("--skip-transformers", action="store_true", help="only the engine and llama.cpp rows")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    engine = build_llm(settings_for("auto"))
    if not isinstance(engine, EngineChatModel):
        raise SystemExit("the llama.cpp engine is not available here (see the log above)")
    hits = context_hits(QUESTION, 700, engine.count_tokens)
    built = build_prompt(QUESTION, hits, [], engine.count_tokens, 10**6)
    print(f"prompt: {built.tokens} tokens, {len(hits)} passages; threads {torch.get_num_threads()}")
    rows = [
        bench_chat_path(
            engine, built.messages, args.runs, args.new_tokens, "chat path, llama.cpp engine q8_0"
        )
    ]
    users = []
    if args.users:
        prompts = [
            build_prompt(
                q, context_hits(q, 700, engine.count_tokens), [], engine.count_tokens, 10**6
            ).messages
            for q in (QUESTIONS * args.users)[: args.users]
        ]
        for slots in args.slots:
            llm = build_llm(settings_for("auto", slots=slots))
            bench_users(llm, prompts[:1], 8)  # started and warm
            row = {"slots": slots, **bench_users(llm, prompts, args.new_tokens)}
            row["one_user_tokens_per_s"] = bench_users(llm, prompts[:1], args.new_tokens)[
                "total_tokens_per_s"
            ]
            row["load_average"] = machine()["load_average"]
            llm.close()
            users.append(row)
            print(f"{args.users} users at once, {slots} slot(s): {row}")
    converted = engine.engine.path
    engine.close()
    if not args.skip_transformers:
        for quantize, name in (
            ("none", "chat path, transformers float32"),
            ("int8", "chat path, transformers int8"),
        ):
            llm = build_llm(settings_for("transformers", quantize))
            rows.append(bench_chat_path(llm, built.messages, args.runs, args.new_tokens, name))
            del llm
    for path, name in (
        (converted, "llama.cpp (mainline), same q8_0 file"),
        (embedded_gguf_path(), "llama.cpp (mainline), embedded Q4_1"),
    ):
        if (row := bench_llama_cpp(path, built.messages, args.runs, args.new_tokens, name)) is not None:
            rows.append(row)
    references = [r for r in rows if r["variant"].startswith("llama.cpp")]
    if references:
        fastest = max(r["decode_tokens_per_s"] for r in references)
        quickest = min(r["ttft_s"] for r in references)
        rows[0]["decode_vs_best_llama_cpp"] = round(rows[0]["decode_tokens_per_s"] / fastest, 2)
        rows[0]["ttft_vs_best_llama_cpp"] = round(rows[0]["ttft_s"] / quickest, 2)
        print(
            f"engine vs the best llama.cpp row: decode {rows[0]['decode_vs_best_llama_cpp']}x, TTFT {rows[0]['ttft_vs_best_llama_cpp']}x"
        )
    emit(
        {
            "prompt_tokens": built.tokens,
            "new_tokens": args.new_tokens,
            "rows": rows,
            "users": users,
            "date": time.strftime("%Y-%m-%d"),
        },
        args.json,
    )


if __name__ == "__main__":
    main()
