"""The exported grounded-QA examples whose question no earlier stage trained on: the data of the next stage
of a run grown in stages (``chatbot train --from``; docs/model-card.md, "Gemma 3 270M trained on the CPU").

An example's question is its ``source`` less the ``:positive`` / ``:negative`` ending and, in an export with
``--variants`` N, the ``:v1`` ... tag of its other arrangements (file and question id), so a question seen
with its passage, asked without it, or in another arrangement of its sources counts as one. The unseen
examples are shuffled with a fixed seed and the first ``--count`` kept, so the stage is the same every time:

    python benchmarks/unseen_examples.py all.jsonl --seen stage1.jsonl --count 2900 --out stage2.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

_VARIANT = re.compile(r":v\d+$")  # finetune.grounded's tag of a question's second, third... arrangement


def question(line: str, path: Path, number: int) -> str:
    try:
        source = json.loads(line)["source"]
    except (ValueError, KeyError, TypeError) as exc:
        sys.exit(f"{path}:{number}: not an exported chat example with a 'source' ({exc})")
    return _VARIANT.sub("", source).rsplit(":", 1)[0]


def read(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True) if line.strip()]
    except OSError as exc:
        sys.exit(f"{path}: {exc.strerror}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("examples", type=Path, help="JSONL written by `chatbot train ... --export`")
    parser.add_argument("--seen", type=Path, nargs="+", required=True, help="JSONL files trained on already")
    parser.add_argument("--count", type=int, required=True, help="examples to keep")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    seen = {question(line, p, i) for p in args.seen for i, line in enumerate(read(p), 1)}
    rows = read(args.examples)
    unseen = [line for i, line in enumerate(rows, 1) if question(line, args.examples, i) not in seen]
    random.Random(args.seed).shuffle(unseen)
    kept = unseen[: args.count]
    args.out.write_text("".join(kept), encoding="utf-8")
    print(f"{len(unseen)} of {len(rows)} examples ask a question not seen; {len(kept)} written to {args.out}")


if __name__ == "__main__":
    main()
