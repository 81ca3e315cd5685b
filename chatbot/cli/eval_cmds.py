"""``chatbot eval rag``: the evaluation harness on a SQuAD v1.1/v2.0 file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from chatbot.cli.app import app, fail, settings_of

eval_app = typer.Typer(help="Evaluate the assistant on question-answer data.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@eval_app.command("rag")
def rag(
    ctx: typer.Context,
    qa: Annotated[Path, typer.Option("--qa", help="SQuAD v1.1/v2.0 JSON file.", exists=True, dir_okay=False)],
    collection: Annotated[
        str,
        typer.Option(
            "--collection", "-C", help="Collection (built from the file's contexts if it does not exist)."
        ),
    ],
    limit: Annotated[int | None, typer.Option(help="Questions to ask, spread evenly over the file.")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the report to this file.")
    ] = None,
    retrieval_only: Annotated[
        bool, typer.Option("--retrieval-only", help="Score retrieval only (no generation; much faster).")
    ] = False,
    split: Annotated[
        str,
        typer.Option(
            help="Questions of 'all' articles, or of the 'heldout' (odd-numbered) ones that the grounded-QA "
            "recipe never trains on, or the 'train' ones."
        ),
    ] = "all",
    mode: Annotated[
        list[str] | None,
        typer.Option(
            help="'present' (the collection as it is) and/or 'absent' (each question asked with its own "
            "paragraph removed from the search; the right reply is to decline). Repeatable."
        ),
    ] = None,
) -> None:
    """Retrieval hit@k and MRR; answer EM, token F1, answer contained; citation accuracy; abstention when the
    answer is absent and when it is present; tokens per answer; TTFT and tokens/s."""
    from tqdm import tqdm

    from chatbot.evaluation import MODES, QAFileError, ensure_collection, evaluate_rag, load_squad, spread
    from chatbot.service import ChatService

    modes = mode or ["present"]
    if unknown := [m for m in modes if m not in MODES]:
        fail(f"--mode {unknown[0]!r}: use {' or '.join(MODES)}", code=2)
    try:
        data = load_squad(qa)
        asked = data.subset(split)
    except QAFileError as exc:
        fail(str(exc))
    except ValueError as exc:  # an unknown --split
        fail(str(exc), code=2)
    service = ChatService(settings_of(ctx))
    if ensure_collection(service, collection, data):
        typer.echo(f"Indexed {len(data.contexts)} contexts into collection '{collection}'.", err=True)
    items = spread(asked.items, limit)
    with tqdm(total=len(items), unit="q", desc="evaluating") as bar:
        report = evaluate_rag(
            service,
            collection,
            items,
            generate=not retrieval_only,
            progress=lambda done, total: bar.update(1),
            modes=modes,
        )
    report.update(qa_file=str(qa), split=split, model=service.model_name())
    text = json.dumps(report, indent=2)
    typer.echo(text)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(text + "\n", encoding="utf-8")
