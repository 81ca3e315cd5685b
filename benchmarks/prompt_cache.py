"""Time to first token of the llama.cpp engine with and without its prompt cache, on grounded questions.

    python benchmarks/grounded_qa.py --squad ../shared/data/squad-es-dev.json --sets squad --limit 10  # builds bench-squad
    python benchmarks/prompt_cache.py --collection bench-squad --qa ../shared/data/squad-es-dev.json --questions 40

Each held-out question is asked through the chat backend with the prompt the chain builds (system prompt,
instructions, the top passages of the collection, the question), once on an engine that keeps the last
prompt's cache and once on one that reads every prompt whole (which one first alternates); one token, so the
time is the prompt's reading and the first token. Consecutive prompts share the system prompt and the instructions
(~110 tokens) and, when the same passage comes first, more.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from common import emit
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from chatbot.backends import build_llm
from chatbot.recipes import chain_style
from chatbot.settings import GenerationSettings, load_settings
from finetune.qa import load_squad, spread
from retrieval.collection import Collection

ROLES = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/assistant-grounded"))
    parser.add_argument("--collection", default="bench-squad")
    parser.add_argument("--qa", type=Path, default=Path("../shared/data/squad-es-dev.json"))
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    engines = {}
    for cache in (False, True):
        settings = load_settings(
            data_dir=args.data_dir,
            models={"device": "cpu", "engine": "llama.cpp", "engine_prompt_cache": cache},
        )
        engines[cache] = build_llm(settings)
    style = chain_style(settings, engines[True].tokenizer)
    collection = Collection.open(settings, args.collection)
    items = spread(load_squad(args.qa).subset("heldout").items, args.questions)
    gen = GenerationSettings(drafts=1, max_new_tokens=1)
    ttft: dict[bool, list[float]] = {False: [], True: []}
    tokens = []
    for item in items:
        hits = collection.search(item.question, settings.chat.top_k)
        messages = [ROLES[role](text) for role, text in style.messages(item.question, hits)]
        tokens.append(engines[True].count_tokens(messages))
        # the engine asked second runs a little slower (the first one's threads still wind down): alternate
        for cache in (False, True) if len(tokens) % 2 else (True, False):
            llm = engines[cache]
            started = time.perf_counter()
            next(iter(llm.stream(messages, generation=gen, sources=[h.text for h in hits])), None)
            ttft[cache].append(time.perf_counter() - started)
    for llm in engines.values():
        llm.close()
    emit(
        {
            "questions": len(items),
            "prompt_tokens_mean": round(statistics.mean(tokens)),
            "ttft_p50_s": {
                "whole prompt": round(statistics.median(ttft[False]), 3),
                "prompt cache": round(statistics.median(ttft[True]), 3),
            },
            "ttft_mean_s": {
                "whole prompt": round(statistics.mean(ttft[False]), 3),
                "prompt cache": round(statistics.mean(ttft[True]), 3),
            },
        },
        args.out,
    )


if __name__ == "__main__":
    main()
