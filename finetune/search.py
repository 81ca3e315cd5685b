"""Hyperparameter search: N Optuna trials over learning rate, LoRA rank and epochs on a small step budget.

Each trial is an ordinary run (``runs/search-<time>/trial-<n>/``, metrics and loss plot included) capped at
``finetune.search_max_steps`` steps and not registered; the objective is the token-weighted validation loss.
The sampler is seeded (TPE, ``finetune.seed``), so the same data and settings propose the same trials.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from finetune.data import TrainSet
from finetune.train import new_run_name, train

if TYPE_CHECKING:
    from finetune.config import Host

log = logging.getLogger(__name__)


@dataclass
class SearchResult:
    best_params: dict[str, Any]
    best_val_loss: float
    trials: list[dict[str, Any]]


def search(settings: Host, trainset: TrainSet, n_trials: int) -> SearchResult:
    try:
        import optuna
    except ImportError as exc:
        raise RuntimeError("hyperparameter search needs optuna: pip install 'optuna>=4'") from exc
    if not trainset.val:
        raise RuntimeError("hyperparameter search needs validation data; raise finetune.val_fraction")
    cfg = settings.finetune
    group = new_run_name(settings, prefix="search")

    def objective(trial: optuna.Trial) -> float:
        lo, hi = cfg.search_lr_range
        params = {
            "learning_rate": trial.suggest_float("learning_rate", lo, hi, log=True),
            "lora_r": trial.suggest_categorical("lora_r", list(cfg.search_ranks)),
            "epochs": trial.suggest_categorical("epochs", list(cfg.search_epochs)),
        }
        params["lora_alpha"] = 2 * params["lora_r"]  # keep the scale alpha/r at 2 as rank changes
        # Epochs count while they fit in the budget; past it, the budget cuts the run (same cost per trial).
        fits = _steps(trainset, settings, params["epochs"]) <= cfg.search_max_steps
        budget = {"max_steps": -1 if fits else cfg.search_max_steps, "save_steps": 10**9, "eval_steps": 10**9}
        trial_settings = settings.model_copy(update={"finetune": cfg.model_copy(update={**params, **budget})})
        run = train(trial_settings, trainset, run_name=f"{group}/trial-{trial.number}", register=False)
        loss = run.metrics["val_loss"]
        log.info("trial %d %s: val loss %.4f", trial.number, params, loss)
        return loss if math.isfinite(loss) else float("inf")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=cfg.seed))
    study.optimize(objective, n_trials=n_trials)
    trials = [{"number": t.number, **t.params, "val_loss": t.value} for t in study.trials]
    return SearchResult(study.best_params, study.best_value, trials)


def _steps(trainset: TrainSet, settings: Host, epochs: float) -> int:
    cfg = settings.finetune
    per_epoch = math.ceil(len(trainset.train) / (cfg.batch_size * cfg.grad_accum))
    return math.ceil(per_epoch * epochs)
