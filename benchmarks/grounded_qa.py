"""Grounded answers: the base model against the shipped grounded-QA adapter, through the real chat chain.

    python benchmarks/grounded_qa.py --squad ../shared/data/squad-es-dev.json --out grounded.json \
        [--limit 200] [--base-limit 60] [--versions base shipped]
    python benchmarks/grounded_qa.py --squad ../shared/data/squad-es-dev.json --sets squad \
        --checkpoints var/models/runs/grounded-qa/checkpoints --limit 60 --out curve.json   # learning curve

``--checkpoints`` registers every complete checkpoint of a grounded-QA run as a version of the benchmark's own
data directory (never of the user's) and evaluates each: F1 against the number of examples trained on.

For each version and each question set, the held-out articles' questions (odd-numbered articles, never
trained on) are asked twice through ``ChatService`` with default settings (hybrid search, top 3 passages,
greedy, the default decoding controls): once of the whole collection ("present") and once with the
question's own paragraph removed from every search ("absent", where declining is right). Question sets:
squad-es (Spanish Wikipedia, if given), and the project's own English and Spanish questions: every
``data/qa/<name>.json`` file, a set named by its file (``--sets`` picks some). ``--yes-no`` keeps only the
yes/no questions (``retrieval.words.yes_no_question``; the answerable ones, every one of them up to
``--limit``). Prints one markdown table; writes every report to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import machine
from tqdm import tqdm

from chatbot.evaluation import ensure_collection, evaluate_rag, load_squad, spread
from chatbot.service import ChatService
from chatbot.settings import load_settings
from retrieval.words import yes_no_question

ROOT = Path(__file__).resolve().parents[1]
# the project's own question files, each a set named by its file (data/qa/<name>.json)
OWN_SETS = {path.stem: path for path in sorted((ROOT / "data/qa").glob("*.json"))}
COLUMNS = [
    ("f1", "F1"),
    ("exact_match", "EM"),
    ("answer_contained", "contained"),
    ("citation_accuracy", "citation acc."),
    ("quote_located", "quote shown"),
    ("abstain_when_absent", "abstains: absent"),
    ("abstain_when_present", "abstains: present"),
    ("abstain_or_unsure_when_absent", "declines or unsure: absent"),
    ("abstain_or_unsure_when_present", "declines or unsure: present"),
    ("f1_sure", "F1 of sure answers"),
    ("f1_unsure", "F1 of unsure answers"),
    ("tokens_per_answer", "tokens/answer"),
    ("ttft_p50_s", "TTFT p50 (s)"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--squad", type=Path, help="SQuAD-format file (e.g. squad-es-dev.json)")
    parser.add_argument("--limit", type=int, default=200, help="questions per set (spread over it)")
    parser.add_argument("--base-limit", type=int, default=60, help="questions per set for 'base' (slow)")
    parser.add_argument("--versions", nargs="+", default=["base", "shipped"])
    parser.add_argument(
        "--checkpoints", type=Path, help="a run's checkpoints folder: evaluate each checkpoint"
    )
    parser.add_argument("--split", default="heldout", help="'heldout' for figures; 'train' to calibrate")
    parser.add_argument(
        "--abstain-bias", type=float, nargs="+", default=[None], help="generation.abstain_bias values to try"
    )
    parser.add_argument(
        "--drafts", type=int, nargs="+", default=[None], help="generation.drafts values to try"
    )
    parser.add_argument("--steps", type=int, nargs="+", help="with --checkpoints: only these steps")
    parser.add_argument("--sets", nargs="+", default=None, help="subset of: squad, " + ", ".join(OWN_SETS))
    parser.add_argument("--yes-no", action="store_true", help="only the answerable yes/no questions")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "assistant-grounded")
    parser.add_argument(
        "--engines",
        nargs="+",
        default=["auto"],
        help="models.engine values to compare (llama.cpp, transformers)",
    )
    parser.add_argument("--out", type=Path, default=Path("grounded.json"))
    args = parser.parse_args()

    sets = question_sets(args.squad, args.sets)
    results = []
    versions = list(args.versions)
    if args.checkpoints:
        versions = register_checkpoints(args.checkpoints, args.data_dir, args.steps)
    for version, bias, drafts, engine in [
        (v, b, d, e) for v in versions for b in args.abstain_bias for d in args.drafts for e in args.engines
    ]:
        generation = {} if bias is None else {"abstain_bias": bias}
        if drafts is not None:
            generation["drafts"] = drafts
        settings = load_settings(
            data_dir=args.data_dir,
            models={"device": "cpu", "version": version, "engine": engine},
            generation=generation,
        )
        service = ChatService(settings)
        for name, path in sets.items():
            qa = load_squad(path)
            ensure_collection(service, f"bench-{name}", qa)
            items = qa.subset(args.split).items
            if args.yes_no:
                items = [item for item in items if item.answerable and yes_no_question(item.question)]
            items = spread(items, args.base_limit if version == "base" else args.limit)
            if not items:
                continue
            with tqdm(total=len(items), desc=f"{version} {bias} {drafts} {engine} {name}", unit="q") as bar:
                report = evaluate_rag(
                    service,
                    f"bench-{name}",
                    items,
                    modes=("present", "absent"),
                    progress=lambda *_: bar.update(),
                    per_answer=True,
                )
            note = next((v.note for v in service_versions(settings) if v.id == version), "")
            report.update(
                version=version,
                set=name,
                model=service.model_name(),
                note=note,
                split=args.split + (" yes/no" if args.yes_no else ""),
                abstain_bias=settings.generation.abstain_bias,
                drafts=settings.generation.drafts,
                engine=type(service.llm).__name__,
            )
            results.append(report)
            args.out.write_text(json.dumps({"machine": machine(), "results": results}, indent=1))
    print(table(results))


def question_sets(squad: Path | None, only: list[str] | None) -> dict[str, Path]:
    """name -> SQuAD-format file: squad-es when given, then the project's own sets; ``only`` those named."""
    sets = ({"squad": squad} if squad else {}) | OWN_SETS
    return {k: v for k, v in sets.items() if not only or k in only}


def register_checkpoints(folder: Path, data_dir: Path, only: list[int] | None = None) -> list[str]:
    """Register each complete checkpoint's adapter as a version under ``data_dir``; their ids, in order."""
    import shutil

    from finetune.checkpoints import is_complete
    from finetune.models import ensure_embedded_generator
    from finetune.registry import Registry

    settings = load_settings(data_dir=data_dir, models={"device": "cpu"})
    registry = Registry(settings)
    known = {v.note: v.id for v in registry.list()}
    state = (
        json.loads((folder.parent / "run.json").read_text()) if (folder.parent / "run.json").is_file() else {}
    )
    per_step = state.get("settings", {}).get("batch_size", 1) * state.get("settings", {}).get("grad_accum", 8)
    ids = []
    steps = sorted((p for p in folder.glob("checkpoint-*") if is_complete(p)), key=lambda p: int(p.name[11:]))
    steps = [p for p in steps if only is None or int(p.name[11:]) in only]
    for checkpoint in steps:
        note = f"{folder.parent.name}/{checkpoint.name}: {int(checkpoint.name[11:]) * per_step} examples"
        if note not in known:
            with tempfile.TemporaryDirectory() as tmp:
                for name in ("adapter_model.safetensors", "adapter_config.json"):
                    shutil.copy2(checkpoint / name, Path(tmp) / name)
                version = registry.add(
                    Path(tmp),
                    kind="lora",
                    base_model=str(ensure_embedded_generator(settings)),
                    manifest={"items": {}},
                    settings={},
                    metrics={},
                    note=note,
                )
            known[note] = version.id
        ids.append(known[note])
    return ids


def service_versions(settings) -> list:
    from finetune.registry import Registry

    return Registry(settings).list()


def table(results: list[dict]) -> str:
    head = (
        "| version | engine | bias | drafts | set | questions | " + " | ".join(c for _, c in COLUMNS) + " |"
    )
    rows = [head, "|" + "---|" * (len(COLUMNS) + 6)]
    for r in results:
        cells = [f"{r[k]:.3f}" if isinstance(r.get(k), float) else str(r.get(k, "-")) for k, _ in COLUMNS]
        rows.append(
            f"| {r['version']} | {r.get('engine', '-')} | {r.get('abstain_bias', 0)} | {r.get('drafts', 1)} | "
            f"{r['set']} | {r['questions']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
