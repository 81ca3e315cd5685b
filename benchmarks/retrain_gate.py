"""The retraining gate's grounded-QA check on two versions already trained: would ``candidate`` pass over
``current``?

    python benchmarks/retrain_gate.py --data-dir var --current shipped --candidate v0001 [--json out.json]

It runs exactly what ``chatbot retrain`` runs for that check (``chatbot.evaluation.rag_scorer`` on the files
of ``finetune.gate_rag_qa``, held-out questions, with and without their passage, through the real chain on
the transformers path), then the gate's rules on those scores alone (``finetune.retrain.gate``): the F1 may
drop by ``gate_rag_max_drop``, the shares declined change by ``gate_rag_max_abstain_change``. The perplexity
checks need the retrain's own data and are not run. About 4 minutes a version on 2 CPU cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import emit, machine

from chatbot.evaluation import rag_scorer
from chatbot.settings import load_settings
from finetune.models import load_version
from finetune.registry import Registry
from finetune.retrain import gate, rag_gate_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("var"))
    parser.add_argument("--current", required=True, help="version id the candidate is compared with")
    parser.add_argument("--candidate", required=True, help="version id to judge")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    settings = load_settings(data_dir=args.data_dir, models={"device": "cpu"})
    cfg = settings.finetune
    files = [p for p in cfg.gate_rag_qa if Path(p).is_file()]
    if not files:
        parser.error(f"none of finetune.gate_rag_qa exists: {[str(p) for p in cfg.gate_rag_qa]}")
    score = rag_scorer(settings, files, cfg.gate_rag_collection, cfg.gate_rag_limit, split="heldout")
    registry = Registry(settings)
    scores: dict[str, dict[str, float]] = {}
    for name, version_id in (("current", args.current), ("candidate", args.candidate)):
        model, tokenizer = load_version(settings, registry.get(version_id))
        for metric, value in rag_gate_scores(score(model, tokenizer)).items():
            scores.setdefault(metric, {})[name] = value
        del model
    reasons = gate(scores, settings)
    for metric, pair in scores.items():
        print(f"{metric}: current {pair['current']:.3f}, candidate {pair['candidate']:.3f}")
    print("passes" if not reasons else "fails: " + "; ".join(reasons))
    emit(
        {
            "machine": machine(),
            "current": args.current,
            "candidate": args.candidate,
            "files": [str(p) for p in files],
            "scores": scores,
            "passes": not reasons,
            "reasons": reasons,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
