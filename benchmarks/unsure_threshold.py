"""Choosing ``chat.unsure_hesitation``: what each threshold marks, read from grounded_qa.py's reports.

    python benchmarks/grounded_qa.py --squad ../shared/data/squad-es-dev.json --versions shipped --sets squad \
        --split train --limit 200 --out train-squad.json
    python benchmarks/grounded_qa.py --versions shipped --split train --limit 40 --out train-own.json
    python benchmarks/unsure_threshold.py train-squad.json train-own.json

grounded_qa.py records, for every answer, the model's hesitation at its first token (the abstention sentence's
logit minus the best other token's; ``finetune.decoding.FirstTokenBias``), whether it declined, and its F1. An
answer is marked unsure when it was not declined and its hesitation is above the threshold. For each
threshold this prints, over squad-es, the project's own sets and all of them:

- the share of the answers to "present" questions that are marked, among the right ones (F1 >= 0.5) and the
  wrong ones: a good mark falls on few right answers and many wrong ones;
- "declined or marked" when the answer is present and when it is absent;
- the F1 of the answers left unmarked and of the marked ones;
- the share of all marked answers (present or absent) that are wrong, and how many were marked.

No model runs here: the reports hold everything.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

THRESHOLDS = [-4.0, -3.0, -2.5, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0]
RIGHT = 0.5  # an answer with at least this token F1 counts as right


def mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def rows_of(paths: list[Path]) -> list[tuple[str, str, float | None, bool, float | None]]:
    """(set, mode, hesitation, declined, F1) for every answer in the reports."""
    rows = []
    for path in paths:
        for report in json.loads(path.read_text(encoding="utf-8"))["results"]:
            if "answers" not in report:
                raise SystemExit(
                    f"{path}: set {report.get('set')!r} has no per-answer records (an older report)"
                )
            rows += [(report["set"], *answer) for answer in report["answers"]]
    return rows


def table(rows: list[tuple[str, str, float | None, bool, float | None]]) -> str:
    present = [r for r in rows if r[1] == "present"]
    absent = [r for r in rows if r[1] == "absent"]
    answered = [r for r in present if not r[3] and r[2] is not None]
    right = [r for r in answered if r[4] >= RIGHT]
    wrong = [r for r in answered if r[4] < RIGHT]
    out = [
        f"{len(present)} present, {len(absent)} absent; declined: present "
        f"{fmt(mean([float(r[3]) for r in present]))}, absent {fmt(mean([float(r[3]) for r in absent]))}",
        "",
        "| threshold | marked: right / wrong answers | declined or marked: present / absent "
        "| F1 unmarked / marked | marked answers that are wrong |",
        "|---|---|---|---|---|",
    ]

    for t in THRESHOLDS:

        def marked(r: tuple, t: float = t) -> bool:
            return not r[3] and r[2] is not None and r[2] > t

        n_marked = sum(marked(r) for r in present + absent)
        n_wrong = sum(marked(r) for r in wrong) + sum(marked(r) for r in absent)
        out.append(
            f"| {t:g} | {fmt(mean([float(marked(r)) for r in right]))} / "
            f"{fmt(mean([float(marked(r)) for r in wrong]))} | "
            f"{fmt(mean([float(r[3] or marked(r)) for r in present]))} / "
            f"{fmt(mean([float(r[3] or marked(r)) for r in absent]))} | "
            f"{fmt(mean([r[4] for r in answered if not marked(r)]))} / "
            f"{fmt(mean([r[4] for r in answered if marked(r)]))} | "
            f"{fmt(n_wrong / n_marked if n_marked else None)} of {n_marked} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", type=Path, nargs="+", help="JSON written by grounded_qa.py --out")
    rows = rows_of(parser.parse_args().reports)
    for name, part in (
        ("squad-es", [r for r in rows if r[0] == "squad"]),
        ("the project's own sets", [r for r in rows if r[0] != "squad"]),
        ("all", rows),
    ):
        if part:
            print(f"\n### {name}\n\n{table(part)}")


if __name__ == "__main__":
    main()
