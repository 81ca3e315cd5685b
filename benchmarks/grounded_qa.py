"""Grounded answers: the base model against the shipped grounded-QA adapter, through the real chat chain.

    python benchmarks/grounded_qa.py --squad ../shared/data/squad-es-dev.json --out grounded.json \
        [--limit 200] [--base-limit 60] [--versions base shipped]

For each version and each question set, the held-out articles' questions (odd-numbered articles, never
trained on) are asked twice through ``ChatService`` with default settings (hybrid search, top 3 passages,
greedy, the default decoding controls): once of the whole collection ("present") and once with the
question's own paragraph removed from every search ("absent", where declining is right). Question sets:
squad-es (Spanish Wikipedia, if given), and the project's own English and Spanish questions about
data/sample and docs/ (data/qa/). Prints one markdown table; writes every report to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

from tqdm import tqdm

from chatbot.evaluation import ensure_collection, evaluate_rag, load_squad, spread
from chatbot.service import ChatService
from chatbot.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
OWN_SETS = {
    "sample-en": ROOT / "data/qa/sample-en.json",
    "docs-en": ROOT / "data/qa/docs-en.json",
    "sample-es": ROOT / "data/qa/sample-es.json",
}
COLUMNS = [
    ("f1", "F1"),
    ("exact_match", "EM"),
    ("answer_contained", "contained"),
    ("citation_accuracy", "citation acc."),
    ("abstain_when_absent", "abstains: absent"),
    ("abstain_when_present", "abstains: present"),
    ("tokens_per_answer", "tokens/answer"),
    ("ttft_p50_s", "TTFT p50 (s)"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--squad", type=Path, help="SQuAD-format file (e.g. squad-es-dev.json)")
    parser.add_argument("--limit", type=int, default=200, help="questions per set (spread over it)")
    parser.add_argument("--base-limit", type=int, default=60, help="questions per set for 'base' (slow)")
    parser.add_argument("--versions", nargs="+", default=["base", "shipped"])
    parser.add_argument("--sets", nargs="+", default=None, help="subset of: squad, " + ", ".join(OWN_SETS))
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "assistant-grounded")
    parser.add_argument("--out", type=Path, default=Path("grounded.json"))
    args = parser.parse_args()

    sets = {"squad": args.squad} if args.squad else {}
    sets.update(OWN_SETS)
    if args.sets:
        sets = {k: v for k, v in sets.items() if k in args.sets}
    results = []
    for version in args.versions:
        settings = load_settings(data_dir=args.data_dir, models={"device": "cpu", "version": version})
        service = ChatService(settings)
        for name, path in sets.items():
            qa = load_squad(path)
            ensure_collection(service, f"bench-{name}", qa)
            items = spread(qa.subset("heldout").items, args.base_limit if version == "base" else args.limit)
            with tqdm(total=len(items), desc=f"{version} {name}", unit="q") as bar:
                report = evaluate_rag(
                    service,
                    f"bench-{name}",
                    items,
                    modes=("present", "absent"),
                    progress=lambda *_: bar.update(),
                )
            report.update(version=version, set=name, model=service.model_name())
            results.append(report)
            args.out.write_text(json.dumps({"machine": machine(), "results": results}, indent=1))
    print(table(results))


def machine() -> dict[str, str]:
    return {
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def table(results: list[dict]) -> str:
    head = "| version | set | questions | " + " | ".join(c for _, c in COLUMNS) + " |"
    rows = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    for r in results:
        cells = [f"{r[k]:.3f}" if isinstance(r.get(k), float) else str(r.get(k, "-")) for k, _ in COLUMNS]
        rows.append(f"| {r['version']} | {r['set']} | {r['questions']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
