"""Time to first token and decode speed of the chat path on the embedded model, side by side with llama.cpp
on the same GGUF file and the same prompt (~700 tokens of retrieved context).

    python benchmarks/chat_speed.py [--runs 3] [--new-tokens 96] [--json out.json]

Needs `pip install llama-cpp-python` (benchmark-only dependency) for the llama.cpp column.
Variants: transformers float32 (the default chat path), transformers with dynamic int8 linear layers
(models.quantize=int8), and llama.cpp on the Q4_1 GGUF file.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from langchain_core.messages import BaseMessage

from chatbot.backends import build_llm
from chatbot.llm import to_chat_dicts
from chatbot.prompt import build_prompt
from chatbot.settings import GenerationSettings, load_settings
from finetune.models import embedded_gguf_path
from retrieval.types import Hit

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "Which file formats can I index, and what happens when I run the index command again?"


def context_hits(target_tokens: int, count_tokens) -> list[Hit]:
    """Passages of the sample collection, added until the sources reach ~target_tokens."""
    paragraphs = []
    for path in sorted((ROOT / "data" / "sample").glob("*.md")):
        paragraphs += [(path.name, p) for p in path.read_text(encoding="utf-8").split("\n\n") if len(p) > 120]
    hits: list[Hit] = []
    for i, (name, text) in enumerate(paragraphs):
        hits.append(Hit(i, text, name, 1.0))
        if (
            count_tokens(build_prompt(QUESTION, hits, [], count_tokens, 10**6).messages)
            >= target_tokens + 150
        ):
            break
    return hits


def time_stream(pieces, tokens: int) -> tuple[float, float, int]:
    """(seconds to first text, decode tokens/s after it, pieces) of a stream that decodes exactly ``tokens``
    tokens (both engines are made to: EOS is suppressed). Pieces are counted, not used as tokens: the
    transformers streamer hands out whole words, llama.cpp single tokens."""
    start = time.perf_counter()
    first = None
    n = 0
    for piece in pieces:
        if piece:
            n += 1
            first = first or time.perf_counter()
    end = time.perf_counter()
    return first - start, (tokens - 1) / (end - first), n


def bench_transformers(messages: list[BaseMessage], quantize: str, runs: int, new_tokens: int) -> dict:
    settings = load_settings(
        data_dir=Path(tempfile.gettempdir()) / "assistant-bench",
        models={"device": "cpu", "quantize": quantize},
    )
    llm = build_llm(settings)
    # min_new_tokens: every run decodes the same number of tokens, whatever the model would say
    gen = GenerationSettings(max_new_tokens=new_tokens, repetition_penalty=1.0)
    llm.generator.model.generation_config.min_new_tokens = new_tokens
    results = [
        time_stream((c.content for c in llm.stream(messages, generation=gen)), new_tokens)
        for _ in range(runs + 1)
    ][1:]
    return summarise(f"transformers {'float32' if quantize == 'none' else 'int8 dynamic'}", results)


def bench_llama_cpp(messages: list[BaseMessage], runs: int, new_tokens: int) -> dict | None:
    try:
        from llama_cpp import Llama
    except ImportError:
        print("llama-cpp-python is not installed: skipping the llama.cpp column")
        return None
    llm = Llama(
        model_path=str(embedded_gguf_path()), n_ctx=2048, n_threads=torch.get_num_threads(), verbose=False
    )
    eos = llm.token_eos()

    def run() -> tuple[float, float, int]:
        llm.reset()  # no prompt cache reuse between runs: every run evaluates the whole prompt, as ours do
        stream = llm.create_chat_completion(
            to_chat_dicts(messages),
            max_tokens=new_tokens,
            temperature=0.0,
            stream=True,
            logit_bias={eos: -1e9},  # decode exactly new_tokens, as the transformers runs do
        )
        return time_stream((c["choices"][0]["delta"].get("content", "") for c in stream), new_tokens)

    return summarise("llama.cpp Q4_1 (same GGUF)", [run() for _ in range(runs + 1)][1:])


def summarise(name: str, results: list[tuple[float, float, int]]) -> dict:
    return {
        "variant": name,
        "ttft_s": statistics.median(r[0] for r in results),
        "decode_tokens_per_s": statistics.median(r[1] for r in results),
        "pieces": results[0][2],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per variant (after one warm-up)")
    parser.add_argument("--new-tokens", type=int, default=96)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    base = build_llm(
        load_settings(data_dir=Path(tempfile.gettempdir()) / "assistant-bench", models={"device": "cpu"})
    )
    hits = context_hits(700, base.count_tokens)
    built = build_prompt(QUESTION, hits, [], base.count_tokens, 10**6)
    del base
    print(f"prompt: {built.tokens} tokens, {len(hits)} passages; torch threads {torch.get_num_threads()}")
    rows = [
        bench_transformers(built.messages, "none", args.runs, args.new_tokens),
        bench_transformers(built.messages, "int8", args.runs, args.new_tokens),
    ]
    if (llama := bench_llama_cpp(built.messages, args.runs, args.new_tokens)) is not None:
        rows.append(llama)
    ref = rows[0]["decode_tokens_per_s"]
    for row in rows:
        row["decode_vs_transformers_fp32"] = row["decode_tokens_per_s"] / ref
        print(
            f"{row['variant']:32s} TTFT {row['ttft_s']:.2f} s   decode {row['decode_tokens_per_s']:.1f} tok/s"
            f"   ({row['decode_vs_transformers_fp32']:.2f}x)"
        )
    report = {
        "prompt_tokens": built.tokens,
        "new_tokens": args.new_tokens,
        "machine": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "rows": rows,
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
