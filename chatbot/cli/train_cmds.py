"""``chatbot train``, ``chatbot retrain`` and ``chatbot models list|promote|rollback|export``.

Exit codes: 0 success (retrain: a new version promoted), 1 error, 2 bad settings or arguments,
3 retrain candidate rejected by the gate (current model kept), 4 nothing new to train on, 5 another retrain
is running.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import typer

from chatbot.cli.app import app, fail, log_handler, plain, settings_of
from chatbot.settings import Settings

models_app = typer.Typer(help="Model versions: list, promote, roll back, export.", no_args_is_help=True)
app.add_typer(models_app, name="models")
log = logging.getLogger(__name__)


def _with(settings: Settings, **finetune: Any) -> Settings:
    changes = {k: v for k, v in finetune.items() if v is not None}
    return settings.model_copy(update={"finetune": settings.finetune.model_copy(update=changes)})


def _progress_logging() -> None:
    # The Trainer's tqdm bar shows progress and ETA; INFO from finetune (and from the grounded-QA recipe, which
    # builds examples before training) says what is being done.
    for name in ("finetune", "chatbot.recipes"):
        logging.getLogger(name).setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(handlers=[log_handler()])


@app.command()
def train(
    ctx: typer.Context,
    docs: Annotated[list[Path] | None, typer.Option("--docs", help="Folder of .txt/.md documents.")] = None,
    chat: Annotated[list[Path] | None, typer.Option("--chat", help="JSONL file of chat examples.")] = None,
    feedback: Annotated[
        bool | None, typer.Option("--feedback/--no-feedback", help="Use rated answers.")
    ] = None,
    method: Annotated[str | None, typer.Option(help="'lora' or 'full' (default: finetune.method).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N optimizer steps.")] = None,
    run: Annotated[str | None, typer.Option("--run-name", help="Run name (default: run-<UTC time>).")] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the latest (or --run-name) unfinished run exactly.")
    ] = False,
    search: Annotated[int, typer.Option(help="Run N Optuna trials instead and report the best.")] = 0,
    promote: Annotated[bool, typer.Option(help="Make the trained version current.")] = False,
    recipe: Annotated[
        str,
        typer.Option(
            help="'domain': documents, chat examples and feedback; 'grounded-qa': answer from numbered "
            "sources, built from --qa files (docs/model-card.md)."
        ),
    ] = "domain",
    qa: Annotated[
        list[Path] | None, typer.Option("--qa", help="SQuAD v1.1/v2.0 file (grounded-qa; repeatable).")
    ] = None,
    split: Annotated[
        str, typer.Option(help="Articles to train on: 'train' (even-numbered; odd are held out) or 'all'.")
    ] = "train",
    limit: Annotated[
        int | None, typer.Option(help="Questions per --qa file, spread evenly over it (grounded-qa).")
    ] = None,
    variants: Annotated[
        int,
        typer.Option(
            min=1,
            help="Examples per question, each with its own arrangement of sources (grounded-qa): "
            "N epochs' worth of data that never repeats an example.",
        ),
    ] = 1,
    follow_ups: Annotated[
        int,
        typer.Option(
            min=0,
            help="Also this many two-turn examples per --qa file at most, whose second question leaves "
            "its subject to the first (grounded-qa; docs/model-card.md).",
        ),
    ] = 0,
    off_topic_follow_ups: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="For this share of the --follow-ups examples, one more whose second question is about "
            "another article, answered with the abstention sentence (grounded-qa).",
        ),
    ] = 0.0,
    only_follow_ups: Annotated[
        bool,
        typer.Option(
            help="Only the --follow-ups examples, not one per question (to add them to a trained version "
            "with `chatbot retrain`; docs/model-card.md)."
        ),
    ] = False,
    export: Annotated[
        Path | None,
        typer.Option(
            help="Write the chat examples to this JSONL file and stop, without training: train on them "
            "elsewhere (a GPU machine) with --chat FILE.",
        ),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Go on training this version (an id of `chatbot models list`, or 'shipped') instead of "
            "starting from the base: more training in as many runs as there is time for. It must stand on "
            "the configured models.generator.",
        ),
    ] = None,
) -> None:
    """Train on documents, chat examples and feedback (or on grounded QA); register the result as a model
    version."""
    from finetune.data import DataError, build_trainset, collect
    from finetune.models import load_tokenizer
    from finetune.train import TRAJECTORY, TrainError
    from finetune.train import train as run_training

    _progress_logging()
    settings = _with(settings_of(ctx), method=method, max_steps=max_steps)
    if recipe not in ("domain", "grounded-qa"):
        fail(f"--recipe {recipe!r}: use 'domain' or 'grounded-qa'", code=2)
    src = RunSources(
        docs=docs,
        chat=chat,
        feedback=feedback,
        recipe=recipe,
        qa=qa,
        split=split,
        limit=limit,
        variants=variants,
        follow_ups=follow_ups,
        only_follow_ups=only_follow_ups,
        off_topic_follow_ups=off_topic_follow_ups,
    )
    if resume:
        record = _run_record(settings, run)
        # the run's course depends on these settings: take them from the run (an explicit --method or
        # --max-steps that differs is refused by the training itself, by name)
        recorded = record.get("settings", {})
        kept = {k: recorded[k] for k in TRAJECTORY if k in recorded}
        settings = _with(settings.model_copy(update={"finetune": settings.finetune.model_copy(update=kept)}),
                         method=method, max_steps=max_steps)  # fmt: skip
        if start is not None and start != record.get("init"):
            fail(f"--from {start}: the run started from {record.get('init') or 'the base'}; --resume goes on "
                 "from where it started (leave --from out)", code=2)  # fmt: skip
        start = record.get("init")
        if docs is None and chat is None and feedback is None and qa is None:
            src = RunSources.of(record)  # resume reads the data the run started with
    grounded = src.recipe == "grounded-qa"
    if grounded:
        if not src.qa:
            fail("--recipe grounded-qa needs at least one --qa FILE (SQuAD format)", code=2)
        if missing := [str(p) for p in src.qa if not p.is_file()]:
            fail(f"--qa: no such file: {', '.join(missing)}", code=2)
        # the recipe reads only what the command names: no settings' folders, files or feedback, and so the
        # run records none, and a --resume reads none
        src = replace(src, docs=src.docs or [], chat=src.chat or [], feedback=bool(src.feedback))
    init = _start_version(settings, start)
    try:
        tokenizer = load_tokenizer(settings, init)
        found = collect(
            settings.finetune,
            settings.data_dir,
            docs_dirs=src.docs,
            chat_files=src.chat,
            use_feedback=src.feedback,
            retrieval=settings.retrieval,
        )
        if grounded:
            from chatbot.recipes import grounded_items
            from finetune.data import dedupe
            from finetune.grounded import RecipeOptions

            options = RecipeOptions(
                k=settings.chat.top_k,
                seed=settings.finetune.seed,
                variants=src.variants,
                follow_ups=src.follow_ups,
                only_follow_ups=src.only_follow_ups,
                off_topic_share=src.off_topic_follow_ups,
            )
            made = grounded_items(settings, src.qa, src.split, src.limit, tokenizer, options)
            found.items = dedupe([*made, *found.items])
        for issue in found.issues:
            typer.echo(f"warning: skipped {plain(str(issue))}", err=True)
        for source, reason in found.failed.items():
            typer.echo(f"warning: skipped {plain(source)}: {plain(reason)}", err=True)
        if export is not None:
            from finetune.data import write_chat_jsonl

            write_chat_jsonl(export, found.items)
            typer.echo(f"{export}: {len(found.items)} chat examples")
            return
        trainset = build_trainset(found.items, tokenizer, settings.finetune)
        if search:
            from finetune.search import search as run_search

            result = run_search(settings, trainset, search)
            for t in result.trials:
                typer.echo(json.dumps(t))
            typer.echo(f"best (val loss {result.best_val_loss:.4f}): {json.dumps(result.best_params)}")
            return
        cfg = settings.finetune
        sources = replace(  # the settings' own where the command named none
            src,
            docs=[Path(p) for p in (cfg.docs_dirs if src.docs is None else src.docs)],
            chat=[Path(p) for p in (cfg.chat_files if src.chat is None else src.chat)],
            feedback=cfg.use_feedback if src.feedback is None else src.feedback,
            qa=src.qa or None,
        )
        outcome = run_training(
            settings, trainset, run_name=run, resume=resume, init=init, sources=sources.record()
        )
    except (DataError, TrainError) as exc:
        fail(str(exc))
    if outcome.version is None:
        return  # a non-zero rank of a distributed launch
    if promote:
        from finetune.registry import Registry

        Registry(settings).promote(outcome.version.id)
    m = outcome.metrics
    speed = "speed not timed" if m["tokens_per_second"] is None else f"{m['tokens_per_second']} tokens/s"
    typer.echo(
        f"version {outcome.version.id}{' (current)' if promote else ''}: {m['steps']} steps, "
        f"val loss {m['val_loss']:.4f}, perplexity {m['val_perplexity']:.2f}, {speed}; run {outcome.run_dir}"
    )


def _start_version(settings: Settings, start: str | None) -> Any:
    """The version ``--from`` names (None: the base), refused by name when it is unknown or stands on another
    base than the configured generator (its weights would not fit the model being loaded)."""
    if start is None:
        return None
    from finetune.registry import Registry, RegistryError

    try:
        version = Registry(settings).get(start)
    except RegistryError as exc:
        fail(f"--from: {exc}", code=2)
    if version.base_setting != settings.models.generator:
        fail(
            f"--from {start}: it was trained on models.generator {version.base_setting!r}, the settings say "
            f"{settings.models.generator!r}; set models.generator (APP_MODELS__GENERATOR) to its base",
            code=2,
        )
    return version


def _run_record(settings: Settings, run: str | None) -> dict[str, Any]:
    """The run.json of the run ``--resume`` continues."""
    from finetune.train import TrainError, run_to_resume

    try:
        run_dir = run_to_resume(settings, run)
        return json.loads((run_dir / "run.json").read_text())
    except TrainError as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(f"{run_dir / 'run.json'} cannot be read ({exc}); start a new run")


@dataclass(frozen=True)
class RunSources:
    """What a run trains on, as ``chatbot train`` was given it: recorded in the run's ``run.json`` (under
    ``sources``) so that ``--resume`` reads the same data again. ``docs``/``chat``/``feedback`` are None
    where the command named none (the settings' own are then used, and recorded)."""

    docs: list[Path] | None
    chat: list[Path] | None
    feedback: bool | None
    recipe: str = "domain"
    qa: list[Path] | None = None
    split: str = "train"
    limit: int | None = None
    variants: int = 1
    follow_ups: int = 0
    only_follow_ups: bool = False
    off_topic_follow_ups: float = 0.0

    def record(self) -> dict[str, Any]:
        return {
            "docs_dirs": [str(p) for p in self.docs],
            "chat_files": [str(p) for p in self.chat],
            "use_feedback": self.feedback,
            "recipe": self.recipe,
            "qa_files": [str(p) for p in self.qa or []],
            "split": self.split,
            "limit": self.limit,
            "variants": self.variants,
            "follow_ups": self.follow_ups,
            "only_follow_ups": self.only_follow_ups,
            "off_topic_follow_ups": self.off_topic_follow_ups,
        }

    @classmethod
    def of(cls, run: dict[str, Any]) -> RunSources:
        """The sources a run recorded (a run recorded before a field existed gets its default)."""
        sources = run.get("sources", {})
        default = cls(docs=[], chat=[], feedback=None)
        return cls(
            docs=[Path(p) for p in sources.get("docs_dirs", [])],
            chat=[Path(p) for p in sources.get("chat_files", [])],
            feedback=sources.get("use_feedback"),
            recipe=sources.get("recipe", default.recipe),
            qa=[Path(p) for p in sources.get("qa_files", [])] or None,
            split=sources.get("split", default.split),
            limit=sources.get("limit", default.limit),
            variants=sources.get("variants", default.variants),
            follow_ups=sources.get("follow_ups", default.follow_ups),
            only_follow_ups=sources.get("only_follow_ups", default.only_follow_ups),
            off_topic_follow_ups=sources.get("off_topic_follow_ups", default.off_topic_follow_ups),
        )


@app.command()
def retrain(ctx: typer.Context) -> None:
    """Train on what is new since the current version; promote only if the evaluation gate passes."""
    from finetune.data import DataError
    from finetune.retrain import retrain as run_retrain

    _progress_logging()
    settings = settings_of(ctx)
    cfg = settings.finetune
    rag_eval = None
    qa_gate = [p for p in cfg.gate_rag_qa if Path(p).is_file()]
    if cfg.gate_rag_eval and not qa_gate:
        log.warning(
            "finetune.gate_rag_eval: none of %s exists; the gate skips the grounded-QA evaluation",
            [str(p) for p in cfg.gate_rag_qa],
        )
    elif cfg.gate_rag_eval:
        from chatbot.evaluation import rag_scorer

        rag_eval = rag_scorer(settings, qa_gate, cfg.gate_rag_collection, cfg.gate_rag_limit, split="heldout")

    def grounded(wanted: int) -> list[Any]:
        from chatbot.recipes import grounded_items
        from finetune.models import load_tokenizer
        from finetune.qa import qa_paths
        from finetune.registry import Registry

        files = qa_paths(cfg.grounded_qa_files)
        tokenizer = load_tokenizer(settings, Registry(settings).current())
        return grounded_items(settings, files, "train", None, tokenizer, sample=wanted) if files else []

    try:
        report = run_retrain(settings, rag_eval=rag_eval, grounded=grounded)
    except DataError as exc:
        fail(str(exc))
    typer.echo(f"{report.status}: {report.message}")
    for metric, values in report.scores.items():
        typer.echo(f"  {metric}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
    for skipped in report.skipped:
        typer.echo(f"  not checked: {skipped}")
    raise typer.Exit(report.exit_code)


@models_app.command("list")
def list_versions(ctx: typer.Context) -> None:
    """Every version, oldest first; '*' marks the current one."""
    from finetune.models import engine_status
    from finetune.registry import Registry

    settings = settings_of(ctx)
    registry = Registry(settings)
    current = registry.current_id()
    for v in registry.list():
        ppl = v.metrics.get("val_perplexity")
        shown = f"{ppl:.2f}" if isinstance(ppl, float) else "-"
        typer.echo(
            f"{'*' if v.id == current else ' '} {v.id}  {v.kind:4}  {v.created_at}  "
            f"val_ppl {shown:>8}  parent {v.parent or '-':5}  llama.cpp: {engine_status(settings, v):22}  {v.note}"
        )
    if current is None:
        typer.echo("(no current version: the chat uses the base model)")


@models_app.command()
def promote(
    ctx: typer.Context, version: Annotated[str, typer.Argument(help="Version id, e.g. v0003.")]
) -> None:
    """Make VERSION the current model (the chat picks it up without a restart)."""
    from finetune.registry import Registry, RegistryError

    settings = settings_of(ctx)
    try:
        Registry(settings).promote(version)
    except RegistryError as exc:
        fail(str(exc))
    typer.echo(f"{version} is now current")
    _convert_for_engine(settings)


@models_app.command()
def prepare(ctx: typer.Context) -> None:
    """Get the model the chat will use ready now (converted for llama.cpp), so the first question does not wait."""
    _convert_for_engine(settings_of(ctx))


def _convert_for_engine(settings: Settings) -> None:
    """Convert the current version for the llama.cpp engine now, so that the chat's next question does not
    wait for it; a model that cannot convert is reported, and the chat serves it with transformers."""
    from chatbot.backends import engine_refusal
    from finetune.models import load_engine_model

    if settings.models.backend != "local":
        return
    if (why := engine_refusal(settings)) is not None:
        typer.echo(f"the chat uses transformers ({why})")
        return
    try:
        path = load_engine_model(settings).path
    except Exception as exc:  # the chat falls back to transformers the same way
        typer.echo(f"llama.cpp cannot serve it ({exc}); the chat will use transformers")
        return
    typer.echo(f"llama.cpp: {path.name} ready")


@models_app.command()
def rollback(ctx: typer.Context) -> None:
    """Return to the version that was current before the last promotion."""
    from finetune.registry import Registry, RegistryError

    try:
        now = Registry(settings_of(ctx)).rollback()
    except RegistryError as exc:
        fail(str(exc))
    typer.echo(f"current: {now.id if now else 'the base model'}")
    _convert_for_engine(settings_of(ctx))


@models_app.command()
def export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Directory to write the merged model to.")],
    version: Annotated[str | None, typer.Argument(help="Version id (default: current).")] = None,
    int8: Annotated[
        bool, typer.Option(help="Mark for int8 dynamic quantisation; report size and speed.")
    ] = False,
    hub: Annotated[str | None, typer.Option(help="Also upload to this Hugging Face repo id.")] = None,
) -> None:
    """Merge a version's adapter into its base and save a standard model directory."""
    from finetune.export import export as run_export
    from finetune.registry import Registry, RegistryError

    settings = settings_of(ctx)
    try:
        registry = Registry(settings)
        chosen = registry.get(version) if version else registry.current()
    except RegistryError as exc:
        fail(str(exc))
    if chosen is None:
        fail("no current version to export; name one (chatbot models list)")
    typer.echo(json.dumps(run_export(settings, chosen, out, int8=int8, hub_repo=hub), indent=1))


@models_app.command()
def ship(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="LoRA version id to ship, e.g. v0001.")],
    figures: Annotated[
        Path | None, typer.Option(help="JSON file of evaluation figures to record with it.")
    ] = None,
) -> None:
    """Make a LoRA version the project's shipped adapter for its base (finetune/adapters/grounded-qa/ for the
    default one, grounded-qa-<base>/ beside it for another; float16)."""
    from finetune.registry import Registry, RegistryError
    from finetune.registry import ship as ship_version

    try:
        chosen = Registry(settings_of(ctx)).get(version)
        out = ship_version(chosen, json.loads(figures.read_text()) if figures else {})
    except (RegistryError, OSError, json.JSONDecodeError) as exc:
        fail(str(exc))
    size = (out / "model" / "adapter_model.safetensors").stat().st_size
    typer.echo(f"shipped {version} to {out} ({size / 2**20:.1f} MiB)")
