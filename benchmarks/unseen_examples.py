"""The exported grounded-QA examples no earlier stage trained on: the data of the next stage of a run grown in
stages (``chatbot train --from``; docs/model-card.md, "Gemma 3 270M trained on the CPU").

An example's question is its ``source`` less the ``:positive`` / ``:negative`` ending and, in an export with
``--variants`` N, the ``:v1`` ... tag of its other arrangements (file and question id), so a question seen
with its passage, asked without it, or in another arrangement of its sources counts as one. With
``--arrangements`` an example is seen only if that very arrangement was trained on (its whole ``source``), so
a stage can take the other arrangements of questions already seen. The unseen examples are shuffled with a
fixed seed and the first ``--count`` kept, so the stage is the same every time:

    python benchmarks/unseen_examples.py all.jsonl --seen stage1.jsonl --count 2900 --out stage2.jsonl

Several exports may be given (an example in two of them is taken once, from the first). ``--take REGEX=N``
(repeatable, N a number or ``all``) draws a stage in shares instead of ``--count``: each takes, in order,
up to N of the shuffled unseen examples left whose source matches REGEX, e.g. every English example then 350
answerless ones of the rest:

    python benchmarks/unseen_examples.py en.jsonl all.jsonl --seen s1.jsonl s2.jsonl --arrangements \\
        --take '-en\\.json:=all' --take ':negative=350' --take '.=437' --out stage4.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

_VARIANT = re.compile(r":v\d+$")  # finetune.grounded's tag of a question's second, third... arrangement


def source(line: str, path: Path, number: int) -> str:
    try:
        return json.loads(line)["source"]
    except (ValueError, KeyError, TypeError) as exc:
        sys.exit(f"{path}:{number}: not an exported chat example with a 'source' ({exc})")


def question(source: str) -> str:
    return _VARIANT.sub("", source).rsplit(":", 1)[0]


def read(path: Path) -> list[tuple[str, str]]:
    """(source, line) of each example of ``path``."""
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True) if line.strip()]
    except OSError as exc:
        sys.exit(f"{path}: {exc.strerror}")
    return [(source(line, path, i), line) for i, line in enumerate(lines, 1)]


def share(text: str) -> tuple[re.Pattern, int | None]:
    pattern, sep, count = text.rpartition("=")
    if not sep or not (count == "all" or count.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r}: expected REGEX=N or REGEX=all")
    try:
        return re.compile(pattern), None if count == "all" else int(count)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "examples", type=Path, nargs="+", help="JSONL written by `chatbot train ... --export`"
    )
    parser.add_argument("--seen", type=Path, nargs="+", required=True, help="JSONL files trained on already")
    parser.add_argument(
        "--arrangements", action="store_true", help="seen = this arrangement trained on, not its question"
    )
    drawn = parser.add_mutually_exclusive_group(required=True)
    drawn.add_argument("--count", type=int, help="examples to keep")
    drawn.add_argument("--take", type=share, action="append", metavar="REGEX=N", help="a share of the stage")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    key = (lambda s: s) if args.arrangements else question
    seen = {key(s) for p in args.seen for s, _ in read(p)}
    rows: dict[str, str] = {}
    for path in args.examples:
        for s, line in read(path):
            rows.setdefault(s, line)
    unseen = [(s, line) for s, line in rows.items() if key(s) not in seen]
    rng = random.Random(args.seed)
    rng.shuffle(unseen)
    if args.count is not None:
        kept = unseen[: args.count]
    else:
        kept, left = [], unseen
        for pattern, count in args.take:
            matching = [row for row in left if pattern.search(row[0])]
            taken = matching if count is None else matching[:count]
            print(f"{pattern.pattern}: {len(taken)} of {len(matching)}")
            chosen = {s for s, _ in taken}
            kept += taken
            left = [row for row in left if row[0] not in chosen]
        rng.shuffle(kept)
    args.out.write_text("".join(line for _, line in kept), encoding="utf-8")
    what = "an arrangement" if args.arrangements else "a question"
    print(f"{len(unseen)} of {len(rows)} examples ask {what} not seen; {len(kept)} written to {args.out}")


if __name__ == "__main__":
    main()
