"""``chatbot eval rag``: the evaluation harness on a SQuAD v1.1 file."""

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
    qa: Annotated[Path, typer.Option("--qa", help="SQuAD v1.1 JSON file.", exists=True, dir_okay=False)],
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
) -> None:
    """Retrieval hit@1/5/10 and MRR; answer exact match and token F1; abstention rate; TTFT and tokens/s."""
    from tqdm import tqdm

    from chatbot.evaluation import QAFileError, ensure_collection, evaluate_rag, load_squad, spread
    from chatbot.service import ChatService

    try:
        data = load_squad(qa)
    except QAFileError as exc:
        fail(str(exc))
    service = ChatService(settings_of(ctx))
    if ensure_collection(service, collection, data):
        typer.echo(f"Indexed {len(data.contexts)} contexts into collection '{collection}'.", err=True)
    items = spread(data.items, limit)
    with tqdm(total=len(items), unit="q", desc="evaluating") as bar:
        report = evaluate_rag(
            service,
            collection,
            items,
            generate=not retrieval_only,
            progress=lambda done, total: bar.update(1),
        )
    report["qa_file"] = str(qa)
    text = json.dumps(report, indent=2)
    typer.echo(text)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(text + "\n", encoding="utf-8")
