"""Periodic retraining behind an evaluation gate; safe to run from cron.

    report = retrain(settings)     # report.status: promoted | rejected | nothing-new | locked

1. Lock: one retrain at a time (a file lock on ``models/retrain.lock``; a second run returns 'locked' at once).
2. Find what is new: every item (passage, chat example, feedback) whose content hash is not in the current
   version's manifest. Nothing new, or exactly the data of the last rejected candidate: 'nothing-new'.
3. Train the candidate from the current version's weights (adapter loaded trainable) on the new training
   items plus ``replay_ratio`` earlier items per new one (fixed seed), against forgetting. A retrain that was
   stopped is continued from its last checkpoint when the data, the starting version and the training
   settings are the same.
4. Gate: compare candidate and current on validation perplexity of the new data (must improve by
   ``gate_min_improvement``), of the earlier data (may worsen by at most ``gate_max_retention_loss``), and,
   when ``gate_rag_eval`` is on and a harness is given, the RAG evaluation score. A check without data on
   either side is skipped, and the report says so; a candidate that no check could compare is rejected.
5. Promote if every check passes and the current version is still the one the candidate was made from (a
   promotion or rollback made meanwhile wins); otherwise keep the current model and say why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from collections.abc import Callable, Mapping
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
from finetune.registry import CurrentChanged, Registry, Version
from finetune.train import TRAJECTORY, new_run_name, train, trajectory_changes, unfinished_runs
from retrieval.files import try_exclusive, write_atomic

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from finetune.config import Host

log = logging.getLogger(__name__)

# Exit codes of `chatbot retrain` (systemd: SuccessExitStatus=3 4 5).
EXIT = {"promoted": 0, "rejected": 3, "nothing-new": 4, "locked": 5}

# The gate's grounded-QA evaluation of a model: its token F1, or a mapping with ``f1`` and, when measured,
# ``abstain_when_absent`` (declines a question whose passage the collection lacks: right) and
# ``abstain_when_present`` (declines one it holds: wrong)
RagEval = Callable[["PreTrainedModel", "PreTrainedTokenizerBase"], "float | Mapping[str, float]"]
RAG_ABSTENTION = {
    "abstain_when_absent": "rag_abstain_when_absent",
    "abstain_when_present": "rag_abstain_when_present",
}


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
    skipped: list[str] = field(default_factory=list)  # gate checks that had no data, and why

    @property
    def exit_code(self) -> int:
        return EXIT[self.status]


def retrain(
    settings: Host,
    rag_eval: RagEval | None = None,
    items: list[Item] | None = None,
    grounded: Callable[[int], list[Item]] | None = None,
) -> RetrainReport:
    """``grounded(n)`` gives about ``n`` grounded-QA examples to mix into the replay (the skill the shipped
    model has), drawn from all of its questions before any is built."""
    models_dir = Path(settings.data_dir) / "models"
    with try_exclusive(models_dir / "retrain.lock") as acquired:
        if not acquired:
            return RetrainReport("locked", "another retrain is running; nothing done")
        return _retrain(settings, rag_eval, items, grounded, models_dir / "retrain-state.json")


def _retrain(
    settings: Host,
    rag_eval: RagEval | None,
    items: list[Item] | None,
    grounded: Callable[[int], list[Item]] | None,
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
    fingerprint = attempt_fingerprint(items, settings)
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
    # earlier items keep the side the current version put them on (its manifest): validating on what it
    # trained on would flatter it, whatever seed or val_fraction say now
    old_val = [i for i in old if known[i.key].get("split") == "val"]
    old_train = [i for i in old if known[i.key].get("split") != "val"]
    replay = replay_sample(old_train, len(new_train), cfg.replay_ratio, cfg.seed)
    wanted = grounded_wanted(len(new_train), settings)
    skill = replay_sample(grounded(wanted), wanted, 1.0, cfg.seed) if grounded and wanted else []
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
    resumed = _resumable_run(settings, trainset.fingerprint, cur_id)
    run = train(
        settings,
        trainset,
        run_name=resumed or new_run_name(settings, "retrain"),
        resume=resumed is not None,
        init=current,
        note=f"retrain: {len(new)} new items over {cur_id or 'base'}",
        origin="retrain",
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
        log.info("gate: evaluating the %s model (%s)", name, version.id if version else "base")
        model, tok = load_version(settings, version)
        pad = tok.pad_token_id
        report.scores.setdefault("new_data_perplexity", {})[name] = evaluate(model, trainset.val, pad)[
            "perplexity"
        ]
        report.scores.setdefault("earlier_data_perplexity", {})[name] = evaluate(model, val_old, pad)[
            "perplexity"
        ]
        if cfg.gate_rag_eval and rag_eval is not None:
            for metric, value in rag_gate_scores(rag_eval(model, tok)).items():
                report.scores.setdefault(metric, {})[name] = value
        del model
    report.skipped = unchecked(report.scores, settings, new_val=bool(new_val), old_val=bool(old_val))
    report.reasons = gate(report.scores, settings)
    skipped = f" (not checked: {'; '.join(report.skipped)})" if report.skipped else ""
    if report.reasons:
        report.message = (
            f"kept {cur_id or 'the base model'}; candidate {candidate.id} failed the gate: "
            + "; ".join(report.reasons)
            + skipped
        )
        state.update(rejected_fingerprint=fingerprint, candidate=candidate.id, current=cur_id)
    else:
        try:
            registry.promote(candidate.id, if_current=cur_id)
        except CurrentChanged as exc:
            # not judged on its merits: the next retrain starts from the new current version
            report.reasons = [str(exc)]
            report.message = f"kept {registry.current_id() or 'the base model'}: {exc}"
        else:
            report.status = "promoted"
            report.message = f"promoted {candidate.id} (was {cur_id or 'the base model'}){skipped}"
            state = {"promoted": candidate.id}
    write_atomic(state_path, json.dumps(state))
    _record(candidate, report)
    log.info(report.message)
    return report


def rag_gate_scores(measured: float | Mapping[str, float]) -> dict[str, float]:
    """The gate's metrics from one grounded-QA evaluation (:data:`RagEval`): ``rag_score`` (its F1, NaN when
    it has none) and the abstention shares it measured."""
    if not isinstance(measured, Mapping):
        measured = {"f1": float(measured)}
    scores = {"rag_score": float(measured.get("f1", math.nan))}
    scores.update({metric: float(measured[key]) for key, metric in RAG_ABSTENTION.items() if key in measured})
    return scores


def _resumable_run(settings: Host, data: str, init: str | None) -> str | None:
    """The name of a killed retrain's run that this one continues: the same data, starting version and
    training settings (so resuming it is exact). Other unfinished retrain runs can never be resumed: deleted."""
    chosen = None
    for run_dir, record in unfinished_runs(settings, "retrain"):
        same = (
            record.get("data_fingerprint") == data
            and record.get("init") == init
            and not trajectory_changes(record.get("settings", {}), settings)
        )
        if same and chosen is None:
            chosen = run_dir.name
            log.info("retrain: continuing the interrupted run %s", chosen)
        else:
            log.info("retrain: removing the interrupted run %s (other data or settings)", run_dir.name)
            shutil.rmtree(run_dir, ignore_errors=True)
    return chosen


def grounded_wanted(n_new: int, settings: Host) -> int:
    """How many grounded-QA examples one retrain replays: ``grounded_replay_ratio`` per new training item,
    at least ``grounded_replay_min``."""
    cfg = settings.finetune
    return max(cfg.grounded_replay_min, round(n_new * cfg.grounded_replay_ratio))


def attempt_fingerprint(items: list[Item], settings: Host) -> str:
    """What a retrain's outcome depends on: the data, the training settings and the gate's. A candidate
    rejected on these is not trained again until one of them changes (new data, a lower learning rate, a
    gate loosened on purpose)."""
    cfg = settings.finetune.model_dump(mode="json")
    chosen = {
        k: cfg[k] for k in (*TRAJECTORY, "replay_ratio", "grounded_replay_ratio", "grounded_replay_min")
    }
    chosen.update({k: v for k, v in cfg.items() if k.startswith("gate_")})
    # the gate's grounded-QA answers depend on the chat's generation settings
    generation = getattr(settings, "generation", None)
    chosen["generation"] = generation.model_dump(mode="json") if generation is not None else {}
    data = manifest_fingerprint(manifest_of(items))
    return hashlib.sha256(json.dumps([data, chosen], sort_keys=True, default=str).encode()).hexdigest()


def _pair(scores: dict[str, dict[str, float]], name: str) -> tuple[float, float] | None:
    s = scores.get(name, {})
    cur, cand = s.get("current", math.nan), s.get("candidate", math.nan)
    return None if math.isnan(cur) and math.isnan(cand) else (cur, cand)


def unchecked(scores: dict[str, dict[str, float]], settings: Host, new_val: bool, old_val: bool) -> list[str]:
    """The gate's checks that had no data on either side, each with why."""
    why = {
        "new_data_perplexity": "new-data perplexity: "
        + (
            "it could not be measured"
            if new_val
            else "no new item was held out to validate on (too few new items)"
        ),
        "earlier_data_perplexity": "earlier-data perplexity: "
        + (
            "it could not be measured"
            if old_val
            else "the current version was trained on none of the data found"
        ),
        "rag_score": "grounded-QA F1: "
        + (
            "no question file of finetune.gate_rag_qa was found"
            if settings.finetune.gate_rag_eval
            else "finetune.gate_rag_eval is off"
        ),
    }
    return [text for name, text in why.items() if _pair(scores, name) is None]


def gate(scores: dict[str, dict[str, float]], settings: Host) -> list[str]:
    """Why the candidate fails (empty = it passes). A metric with no data on either side is skipped; when no
    metric has data, nothing shows the candidate is no worse, and it fails."""
    cfg = settings.finetune
    reasons = []

    if all(
        _pair(scores, name) is None
        for name in ("new_data_perplexity", "earlier_data_perplexity", "rag_score")
    ):
        return [
            "no check could compare it with the current model: no new item held out, no earlier data, no "
            "grounded-QA evaluation (add more new data, or turn on finetune.gate_rag_eval with its question "
            "files)"
        ]

    if (p := _pair(scores, "new_data_perplexity")) is not None:
        limit = p[0] * (1 - cfg.gate_min_improvement)
        if not p[1] <= limit:  # also catches NaN
            reasons.append(
                f"new-data perplexity {p[1]:.3f} is not <= {limit:.3f} (current {p[0]:.3f}, "
                f"finetune.gate_min_improvement={cfg.gate_min_improvement})"
            )
    if (p := _pair(scores, "earlier_data_perplexity")) is not None:
        limit = p[0] * (1 + cfg.gate_max_retention_loss)
        if not p[1] <= limit:
            reasons.append(
                f"earlier-data perplexity {p[1]:.3f} exceeds {limit:.3f} (current {p[0]:.3f}, "
                f"finetune.gate_max_retention_loss={cfg.gate_max_retention_loss}): it forgot"
            )
    if (p := _pair(scores, "rag_score")) is not None and not p[1] >= p[0] - cfg.gate_rag_max_drop:
        reasons.append(
            f"grounded-QA F1 {p[1]:.3f} dropped below {p[0] - cfg.gate_rag_max_drop:.3f} (current {p[0]:.3f}, "
            f"finetune.gate_rag_max_drop={cfg.gate_rag_max_drop})"
        )
    # a model that answers everything keeps its F1 and loses the other half of the skill: declining
    change = cfg.gate_rag_max_abstain_change
    if (p := _pair(scores, "rag_abstain_when_absent")) is not None and not p[1] >= p[0] - change:
        reasons.append(
            f"grounded-QA: it declines {p[1]:.3f} of the questions whose passage is absent, below "
            f"{p[0] - change:.3f} (current {p[0]:.3f}, finetune.gate_rag_max_abstain_change={change})"
        )
    if (p := _pair(scores, "rag_abstain_when_present")) is not None and not p[1] <= p[0] + change:
        reasons.append(
            f"grounded-QA: it declines {p[1]:.3f} of the questions whose passage is present, above "
            f"{p[0] + change:.3f} (current {p[0]:.3f}, finetune.gate_rag_max_abstain_change={change})"
        )
    return reasons


def _record(version: Version, report: RetrainReport) -> None:
    """Keep the gate's verdict with the candidate version (the registry record stays the source of truth)."""
    path = version.dir / "gate.json"
    record = {
        "status": report.status,
        "scores": report.scores,
        "reasons": report.reasons,
        "skipped": report.skipped,
    }
    write_atomic(path, json.dumps(record, indent=1))
