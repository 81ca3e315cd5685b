"""Periodic retraining behind an evaluation gate; safe to run from cron.

    report = retrain(settings)     # report.status: promoted | rejected | nothing-new | locked

1. Lock: one retrain at a time (a file lock on ``models/retrain.lock``; a second run returns 'locked' at once).
2. Find what is new: every item (passage, chat example, feedback) whose content hash is not in the current
   version's manifest. Nothing new, or exactly the data of the last rejected candidate: 'nothing-new'.
3. Train the candidate from the current version's weights (adapter loaded trainable) on the new training
   items plus ``replay_ratio`` earlier items per new one (fixed seed), against forgetting.
4. Gate: compare candidate and current on validation perplexity of the new data (must improve by
   ``gate_min_improvement``), of the earlier data (may worsen by at most ``gate_max_retention_loss``), and,
   when ``gate_rag_eval`` is on and a harness is given, the RAG evaluation score.
5. Promote if every check passes; otherwise keep the current model and say which check failed.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.data import (
    Item,
    build_trainset,
    collect,
    manifest_fingerprint,
    manifest_of,
    replay_sample,
    split,
    tokenize,
)
from finetune.models import load_tokenizer, load_version
from finetune.perplexity import evaluate
from finetune.registry import Registry, Version
from finetune.train import train
from retrieval.files import try_exclusive, write_atomic

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from finetune.config import Host

log = logging.getLogger(__name__)

# Exit codes of `chatbot retrain` (systemd: SuccessExitStatus=3 4 5).
EXIT = {"promoted": 0, "rejected": 3, "nothing-new": 4, "locked": 5}

RagEval = Callable[["PreTrainedModel", "PreTrainedTokenizerBase"], float]


@dataclass
class RetrainReport:
    status: str
    message: str
    candidate: str | None = None
    current: str | None = None
    new_items: int = 0
    replayed_items: int = 0
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> {current, candidate}
    reasons: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT[self.status]


def retrain(
    settings: Host,
    rag_eval: RagEval | None = None,
    items: list[Item] | None = None,
    grounded: Callable[[], list[Item]] | None = None,
) -> RetrainReport:
    """``grounded`` gives the grounded-QA examples to mix into the replay (the skill the shipped model has)."""
    models_dir = Path(settings.data_dir) / "models"
    with try_exclusive(models_dir / "retrain.lock") as acquired:
        if not acquired:
            return RetrainReport("locked", "another retrain is running; nothing done")
        return _retrain(settings, rag_eval, items, grounded, models_dir / "retrain-state.json")


def _retrain(
    settings: Host,
    rag_eval: RagEval | None,
    items: list[Item] | None,
    grounded: Callable[[], list[Item]] | None,
    state_path: Path,
) -> RetrainReport:
    cfg = settings.finetune
    registry = Registry(settings)
    current = registry.current()
    if items is None:
        items = collect(cfg, Path(settings.data_dir), retrieval=settings.retrieval).items
    known = current.manifest["items"] if current else {}
    new = [i for i in items if i.key not in known]
    old = [i for i in items if i.key in known]
    cur_id = current.id if current else None
    fingerprint = manifest_fingerprint(manifest_of(items))
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    if not new:
        return RetrainReport(
            "nothing-new", f"no new or changed data since {cur_id or 'the base model'}", current=cur_id
        )
    if state.get("rejected_fingerprint") == fingerprint and state.get("current") == cur_id:
        return RetrainReport(
            "nothing-new",
            f"same data as the rejected candidate {state.get('candidate')}; nothing new to try",
            current=cur_id,
        )

    # 3. candidate: new training items + a replay sample of earlier training items
    new_train, new_val = split(new, cfg.seed, cfg.val_fraction)
    old_train, old_val = split(old, cfg.seed, cfg.val_fraction)
    replay = replay_sample(old_train, len(new_train), cfg.replay_ratio, cfg.seed)
    skill = grounded_replay(grounded() if grounded else [], len(new_train), settings)
    log.info(
        "retrain: %d new items (%d train), replaying %d of %d earlier and %d grounded-QA examples",
        len(new),
        len(new_train),
        len(replay),
        len(old_train),
        len(skill),
    )
    replay += skill
    tokenizer = load_tokenizer(settings, current)
    trainset = build_trainset(new_train + replay, tokenizer, cfg.model_copy(update={"val_fraction": 0.0}))
    trainset.val = tokenize(new_val, tokenizer, cfg.block_size, True, cfg.chat_max_tokens)
    # The candidate's manifest covers all data present, so the next run sees only what arrives after it.
    trainset.manifest = manifest_of(new_train + old_train, new_val + old_val)
    run = train(
        settings, trainset, init=current, note=f"retrain: {len(new)} new items over {cur_id or 'base'}"
    )
    candidate = run.version
    assert candidate is not None

    # 4. gate
    if cfg.gate_rag_eval and rag_eval is None:
        log.warning("finetune.gate_rag_eval is on but no RAG evaluation harness was given; the gate skips it")
    val_old = tokenize(old_val, tokenizer, cfg.block_size, True, cfg.chat_max_tokens)
    report = RetrainReport(
        "rejected", "", candidate=candidate.id, current=cur_id, new_items=len(new), replayed_items=len(replay)
    )
    for name, version in (("current", current), ("candidate", candidate)):
        model, tok = load_version(settings, version)
        pad = tok.pad_token_id
        report.scores.setdefault("new_data_perplexity", {})[name] = evaluate(model, trainset.val, pad)[
            "perplexity"
        ]
        report.scores.setdefault("earlier_data_perplexity", {})[name] = evaluate(model, val_old, pad)[
            "perplexity"
        ]
        if cfg.gate_rag_eval and rag_eval is not None:
            report.scores.setdefault("rag_score", {})[name] = float(rag_eval(model, tok))
        del model
    report.reasons = gate(report.scores, settings)
    if report.reasons:
        report.message = (
            f"kept {cur_id or 'the base model'}; candidate {candidate.id} failed the gate: "
            + "; ".join(report.reasons)
        )
        state.update(rejected_fingerprint=fingerprint, candidate=candidate.id, current=cur_id)
    else:
        registry.promote(candidate.id)
        report.status = "promoted"
        report.message = f"promoted {candidate.id} (was {cur_id or 'the base model'})"
        state = {"promoted": candidate.id}
    write_atomic(state_path, json.dumps(state))
    _record(candidate, report)
    log.info(report.message)
    return report


def grounded_replay(examples: list[Item], n_new: int, settings: Host) -> list[Item]:
    """Grounded-QA examples for one retrain: ``grounded_replay_ratio`` per new item, at least
    ``grounded_replay_min``, drawn with the seed (all of them when there are fewer)."""
    cfg = settings.finetune
    wanted = max(cfg.grounded_replay_min, round(n_new * cfg.grounded_replay_ratio))
    return replay_sample(examples, wanted, 1.0, cfg.seed)


def gate(scores: dict[str, dict[str, float]], settings: Host) -> list[str]:
    """Why the candidate fails (empty = it passes); a metric with no data on either side is skipped."""
    cfg = settings.finetune
    reasons = []

    def pair(name: str) -> tuple[float, float] | None:
        s = scores.get(name, {})
        cur, cand = s.get("current", math.nan), s.get("candidate", math.nan)
        return None if math.isnan(cur) and math.isnan(cand) else (cur, cand)

    if (p := pair("new_data_perplexity")) is not None:
        limit = p[0] * (1 - cfg.gate_min_improvement)
        if not p[1] <= limit:  # also catches NaN
            reasons.append(
                f"new-data perplexity {p[1]:.3f} is not <= {limit:.3f} (current {p[0]:.3f}, "
                f"finetune.gate_min_improvement={cfg.gate_min_improvement})"
            )
    if (p := pair("earlier_data_perplexity")) is not None:
        limit = p[0] * (1 + cfg.gate_max_retention_loss)
        if not p[1] <= limit:
            reasons.append(
                f"earlier-data perplexity {p[1]:.3f} exceeds {limit:.3f} (current {p[0]:.3f}, "
                f"finetune.gate_max_retention_loss={cfg.gate_max_retention_loss}): it forgot"
            )
    if (p := pair("rag_score")) is not None and not p[1] >= p[0] - cfg.gate_rag_max_drop:
        reasons.append(
            f"grounded-QA F1 {p[1]:.3f} dropped below {p[0] - cfg.gate_rag_max_drop:.3f} (current {p[0]:.3f}, "
            f"finetune.gate_rag_max_drop={cfg.gate_rag_max_drop})"
        )
    return reasons


def _record(version: Version, report: RetrainReport) -> None:
    """Keep the gate's verdict with the candidate version (the registry record stays the source of truth)."""
    path = version.dir / "gate.json"
    write_atomic(
        path,
        json.dumps({"status": report.status, "scores": report.scores, "reasons": report.reasons}, indent=1),
    )
