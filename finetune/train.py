"""The training recipe: setup -> fit -> validate, with exact resume, metrics, a loss plot and registration.

    run = train(settings, trainset, resume=True)

The Hugging Face Trainer does the loop: cosine schedule with warmup, AdamW with weight decay, gradient
accumulation and clipping, evaluation every ``eval_steps``, checkpoints every ``save_steps`` (last
``save_total_limit`` kept). A checkpoint holds weights (the adapter for LoRA), optimizer, scheduler, RNG
states and the step; the Trainer skips the batches already seen, so a resumed run continues with the same
step, learning rate, optimizer state, dropout RNG and data position (``tests/finetune/test_ft_resume.py``).
The same code runs under ``torchrun``/``accelerate launch``: the Trainer reads the launcher's environment and
wraps the model in DDP; only rank 0 writes the metrics, the final model and the registry entry.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from finetune.checkpoints import (
    MarkComplete,
    MetricsFile,
    latest_complete_checkpoint,
    plot_losses,
    truncate_metrics,
)
from finetune.data import TrainSet
from finetune.device import select_device, select_dtype
from finetune.models import base_source, load_causal_lm, load_tokenizer
from finetune.perplexity import Collator, evaluate, learned_loss
from finetune.registry import Registry, Version

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

    from finetune.config import Host

log = logging.getLogger(__name__)


class TrainError(RuntimeError):
    """Training cannot start or resume as asked; the message says why and what to do."""


@dataclass
class RunResult:
    run_dir: Path
    model_dir: Path  # adapter (lora) or full model, with the tokenizer
    kind: str
    base_model: str
    metrics: dict[str, Any]
    manifest: dict[str, Any]
    version: Version | None = None


def _trainer_class() -> type:
    from transformers import Trainer

    class _LabelledLogitsTrainer(Trainer):
        """The Trainer computing logits only where a label is learned.

        A grounded-QA example is ~780 prompt tokens and ~10 answer tokens; the LM head (576 x 49,152 for
        SmolLM2-135M) over every prompt position, forward and backward, was a fifth of the step for nothing.
        The loss is the model's own: summed over learned tokens, divided by the learned tokens of the whole
        accumulated batch when the Trainer gives that count (exact gradient accumulation), else their mean.
        """

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, learned, outputs = learned_loss(model, inputs)
            count = num_items_in_batch if num_items_in_batch is not None else learned
            loss = loss / torch.as_tensor(count, device=loss.device).clamp(min=1)
            return (loss, outputs) if return_outputs else loss

    return _LabelledLogitsTrainer


def LabelledLogitsTrainer(**kwargs: Any) -> Any:  # noqa: N802 - builds the Trainer subclass lazily
    return _trainer_class()(**kwargs)


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows: Sequence[dict[str, list[int]]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.rows[i]


def runs_dir(settings: Host) -> Path:
    return Path(settings.data_dir) / "models" / "runs"


# The settings a run's course depends on (its data, model, schedule and randomness): resuming with other values
# would not continue it as if never stopped.
TRAJECTORY = (
    "method", "seed", "block_size", "chat_max_tokens", "passage_chars", "val_fraction", "lora_r", "lora_alpha",
    "lora_dropout", "lora_target_modules", "learning_rate", "weight_decay", "warmup_ratio", "epochs",
    "max_steps", "batch_size", "grad_accum", "max_grad_norm", "mixed_precision", "group_by_length",
)  # fmt: skip


def unfinished_runs(settings: Host, origin: str) -> list[tuple[Path, dict[str, Any]]]:
    """The runs started by ``origin`` ('train' or 'retrain') that did not finish, newest first, with their
    run.json records."""
    found = []
    for path in runs_dir(settings).glob("*/run.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a run.json cut short by a crash: not a run anyone can resume
        if record.get("status") != "done" and record.get("origin", "train") == origin:
            found.append((path.parent, record))
    return sorted(found, key=lambda r: r[1].get("started_at", ""), reverse=True)


def find_run_to_resume(settings: Host) -> Path | None:
    """The most recently started run of `chatbot train` that did not finish (a retrain's run is never one)."""
    unfinished = unfinished_runs(settings, "train")
    return unfinished[0][0] if unfinished else None


def trajectory_changes(recorded: dict[str, Any], settings: Host) -> list[str]:
    """How ``settings.finetune`` differs from a run's recorded settings in what its course depends on."""
    now = settings.finetune.model_dump(mode="json")
    return [
        f"finetune.{k} was {recorded[k]!r}, now {now[k]!r}"
        for k in TRAJECTORY
        if k in recorded and recorded[k] != now[k]
    ]


def run_to_resume(settings: Host, run_name: str | None) -> Path:
    """The run ``--resume`` continues: the one named, else the latest unfinished one; TrainError if none."""
    run_dir = runs_dir(settings) / run_name if run_name else find_run_to_resume(settings)
    if run_dir is None or not (run_dir / "run.json").is_file():
        raise TrainError(
            f"nothing to resume: no unfinished run{' ' + run_name if run_name else ''} under {runs_dir(settings)}"
        )
    return run_dir


def new_run_name(settings: Host, prefix: str = "run") -> str:
    """``<prefix>-<UTC time>``, made unique (two runs in the same second: retrain right after train)."""
    stamp = datetime.now(UTC).strftime(f"{prefix}-%Y%m%d-%H%M%S")
    name, n = stamp, 1
    while (runs_dir(settings) / name).exists():
        n += 1
        name = f"{stamp}-{n}"
    return name


# ---------------------------------------------------------------------------------------------------- setup
def load_for_training(
    settings: Host, init: Version | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """The model to train (LoRA-wrapped or full), its tokenizer and the base it stands on.

    Weights load in float32: on CUDA the Trainer runs bf16/fp16 autocast over them (mixed precision), on CPU
    and MPS float32 is what works. Continuing a LoRA version loads its adapter *trainable* (peft's default
    for ``from_pretrained`` is frozen, the classic "adapters that load frozen" bug).
    """
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import set_seed

    cfg = settings.finetune
    set_seed(cfg.seed)  # LoRA's random init happens here, before the Trainer seeds anything
    source, kwargs = base_source(settings, init)
    tokenizer = load_tokenizer(settings, init)
    model = load_causal_lm(source, torch.float32, **kwargs)
    model.config.use_cache = False  # the KV cache only costs memory in training
    if init is not None and init.kind == "lora":
        model = PeftModel.from_pretrained(model, init.path, is_trainable=True)
        if cfg.method == "full":
            model = model.merge_and_unload()
    elif cfg.method == "lora":
        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.lora_target_modules),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("trainable parameters: %d of %d (%.2f%%)", trainable, total, 100 * trainable / total)
    return model, tokenizer, source


def training_arguments(settings: Host, checkpoint_dir: Path, has_val: bool):
    from transformers import TrainingArguments

    cfg = settings.finetune
    device = select_device(settings.models.device)
    dtype = select_dtype(settings.models.dtype, device)
    precision = autocast_precision(cfg.mixed_precision, device, dtype)
    return TrainingArguments(
        output_dir=str(checkpoint_dir),
        seed=cfg.seed,
        data_seed=cfg.seed,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a share of the total steps
        max_grad_norm=cfg.max_grad_norm,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        eval_strategy="steps" if has_val else "no",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=not cfg.progress_bar,
        report_to="none",
        use_cpu=device.type == "cpu",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        remove_unused_columns=False,  # rows are plain dicts the collator reads
        dataloader_num_workers=0,  # tokenised already; workers would only add start-up time
        ddp_find_unused_parameters=False,
    )


def autocast_precision(choice: str, device: torch.device, dtype: torch.dtype) -> str:
    """'bf16', 'fp16' or 'no' for the Trainer's autocast. The weights stay float32 (mixed precision)."""
    if choice != "auto":
        return choice
    if device.type == "cuda":
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "no")
    if device.type == "cpu" and cpu_has_bf16():
        return "bf16"
    return "no"


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (x86 avx512_bf16 or AMX; Arm bf16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16", "bf16"))


def prepare_run(
    settings: Host, trainset: TrainSet, run_name: str | None, resume: bool
) -> tuple[Path, Path | None]:
    """The run directory, and the checkpoint to resume from (None = start fresh)."""
    if resume:
        run_dir = run_to_resume(settings, run_name)
        record = json.loads((run_dir / "run.json").read_text())
        if record["data_fingerprint"] != trainset.fingerprint:
            raise TrainError(
                f"the training data changed since run {run_dir.name} started; resuming would not "
                "be exact. Start a new run, or restore the data it was started with"
            )
        if changes := trajectory_changes(record.get("settings", {}), settings):
            raise TrainError(
                f"run {run_dir.name} started with other training settings ({'; '.join(changes)}); resuming "
                "would not be exact. Resume with the settings it started with (`chatbot train --resume` "
                "takes them from the run), or start a new run"
            )
        checkpoint = latest_complete_checkpoint(run_dir / "checkpoints")
        if checkpoint is None:
            log.warning("run %s has no complete checkpoint; starting it from step 0", run_dir.name)
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
        else:
            truncate_metrics(run_dir / "metrics.jsonl", int(checkpoint.name.split("-")[1]))
        return run_dir, checkpoint
    if run_name:
        run_dir = runs_dir(settings) / run_name
        if (run_dir / "run.json").exists():
            raise TrainError(
                f"run {run_name} already exists; pass --resume to continue it or choose another name"
            )
        return run_dir, None
    return runs_dir(settings) / _same_on_all_ranks(new_run_name(settings)), None


# ------------------------------------------------------------------------------------------------------ run
def lineage_manifest(init: Version | None, manifest: dict[str, Any]) -> dict[str, Any]:
    """What a version is trained on: its run's data, and, for a run that went on from ``init`` (``--from``),
    everything ``init`` was trained on too (the run's own entry wins for an item in both), so that a retrain
    from it does not take its parent's data for new."""
    if init is None:
        return manifest
    return {**manifest, "items": {**init.manifest.get("items", {}), **manifest.get("items", {})}}


def train(
    settings: Host,
    trainset: TrainSet,
    *,
    run_name: str | None = None,
    resume: bool = False,
    init: Version | None = None,
    register: bool = True,
    note: str = "",
    callbacks: Sequence[TrainerCallback] = (),
    sources: dict[str, Any] | None = None,
    origin: str = "train",
) -> RunResult:
    """Train on ``trainset`` (continuing ``init``'s weights if given), save, plot, and register a version.
    ``origin``: what started the run ('train' runs are the ones ``--resume`` finds; 'retrain' ones never are)."""
    # 1. setup
    run_dir, checkpoint = prepare_run(settings, trainset, run_name, resume)
    model, tokenizer, base = load_for_training(settings, init)
    args = training_arguments(settings, run_dir / "checkpoints", has_val=bool(trainset.val))
    is_main = args.process_index == 0
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if checkpoint is None:
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
            _write_run(
                run_dir,
                status="running",
                data_fingerprint=trainset.fingerprint,
                started_at=datetime.now(UTC).isoformat(),
                init=init.id if init else None,
                settings=settings.finetune.model_dump(mode="json"),
                sources=sources or {},  # what `chatbot train --resume` reads the data from again
                origin=origin,
            )
        (run_dir / "manifest.json").write_text(json.dumps(trainset.manifest, indent=1))
    trainer = LabelledLogitsTrainer(
        model=model,
        args=args,
        train_dataset=ListDataset(trainset.train),
        eval_dataset=ListDataset(trainset.val) if trainset.val else None,
        data_collator=Collator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=[MarkComplete(run_dir / "checkpoints"), MetricsFile(run_dir / "metrics.jsonl"), *callbacks],
    )
    # 2. fit
    if checkpoint is not None:
        log.info("resuming %s from %s", run_dir.name, checkpoint.name)
    start = time.perf_counter()
    finished_only = checkpoint is not None and _trained_every_step(checkpoint)
    if finished_only:
        out = _load_finished(trainer, checkpoint)
    else:
        out = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = time.perf_counter() - start
    # 3. validate, save, register
    unwrapped = trainer.model
    val = evaluate(unwrapped, trainset.val, tokenizer.pad_token_id, settings.finetune.eval_batch_size)
    kind = "lora" if hasattr(unwrapped, "peft_config") else "full"
    model_dir = run_dir / "final"
    trainer.save_model(str(model_dir))  # the adapter only, for LoRA
    # save_model also pickles the TrainingArguments beside the weights: nothing reads it, and a version (which
    # `models export` hands on) holds no pickle; the run's settings are in its version.json
    (model_dir / "training_args.bin").unlink(missing_ok=True)
    metrics = {
        "steps": trainer.state.global_step,
        "train_loss": out.training_loss,
        "val_loss": val["loss"],
        "val_perplexity": val["perplexity"],
        "val_tokens": val["tokens"],
        "tokens_seen": int(trainer.state.num_input_tokens_seen),
        "seconds_this_session": round(seconds, 2),
        "tokens_per_second": _speed(out.metrics, trainer.state.num_input_tokens_seen, seconds, finished_only),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "resumed_from": checkpoint.name if checkpoint else None,
        "world_size": args.world_size,
    }
    if torch.cuda.is_available():
        metrics["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    result = RunResult(run_dir, model_dir, kind, base, metrics, trainset.manifest)
    if is_main:
        tokenizer.save_pretrained(model_dir)
        plot_losses(run_dir / "metrics.jsonl", run_dir / "loss.png")
        # registered before the run is marked done and its checkpoints go: a kill in between leaves a run to
        # resume, never a run that is done with no version
        if register:
            result.version = Registry(settings).add(
                model_dir,
                kind=kind,
                base_model=base,
                manifest=lineage_manifest(init, trainset.manifest),
                settings=settings.finetune.model_dump(mode="json"),
                metrics=metrics,
                parent=init.id if init else None,
                note=note or f"run {run_dir.name}",
            )
        done = {"version": result.version.id} if result.version else {}
        _write_run(run_dir, status="done", metrics=metrics, finished_at=datetime.now(UTC).isoformat(), **done)
        if not settings.finetune.keep_checkpoints:  # a finished run is never resumed; final/ is what counts
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    log.info("run %s: %s", run_dir.name, metrics)
    return result


def _speed(metrics: dict[str, Any], tokens: int, seconds: float, finished_only: bool) -> float | None:
    """Training tokens per second: the Trainer's figure, else tokens over this session's time; None when this
    session only finished a run that had taken every step and no figure was logged (no step was timed)."""
    if metrics.get("train_tokens_per_second"):
        return round(float(metrics["train_tokens_per_second"]), 1)
    return None if finished_only else round(tokens / max(seconds, 1e-9), 1)


def _trained_every_step(checkpoint: Path) -> bool:
    """Whether the run had taken its last step when it saved ``checkpoint`` (it stopped while validating,
    saving or registering the model)."""
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return 0 < state.get("max_steps", 0) <= state.get("global_step", 0)


def _load_finished(trainer: Any, checkpoint: Path) -> Any:
    """The run's final weights and state from its last checkpoint. The Trainer, asked to resume a run that has
    taken every step, would take one step more; the run goes on to validate, save and register instead."""
    from transformers import TrainerState
    from transformers.trainer_utils import TrainOutput

    log.info("run had trained every step at %s; loading it to finish the run", checkpoint.name)
    trainer._load_from_checkpoint(str(checkpoint))
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    # the run's speed as the Trainer last logged it: this session took no step to measure one
    speeds = [
        e["train_tokens_per_second"] for e in trainer.state.log_history if "train_tokens_per_second" in e
    ]
    metrics = {"train_tokens_per_second": speeds[-1]} if speeds else {}
    return TrainOutput(
        trainer.state.global_step, sum(losses) / len(losses) if losses else float("nan"), metrics
    )


def _same_on_all_ranks(value: str) -> str:
    """Rank 0's value on every process of a torchrun/accelerate launch (run names come from the clock)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState()  # joins the process group the launcher describes in the environment
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]
    return value


def _write_run(run_dir: Path, **fields: Any) -> None:
    path = run_dir / "run.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    record.update(fields)
    path.write_text(json.dumps(record, indent=1, default=str))
