"""Commands for document collections: ``index``, ``search`` and ``collections list|stats|delete``."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from chatbot.cli.app import app, fail, json_text, plain, settings_of
from retrieval.errors import CollectionError, CollectionLockedError
from retrieval.plan import MassDeleteError

collections_app = typer.Typer(help="List, inspect and delete document collections.", no_args_is_help=True)
app.add_typer(collections_app, name="collections")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of text.")]


def _print_json(value: Any) -> None:
    typer.echo(json_text(value, indent=2))


def _open(ctx: typer.Context, name: str, must_exist: bool):
    from retrieval.collection import Collection

    settings = settings_of(ctx)
    try:
        if must_exist and not Collection.exists(settings, name):
            fail(f"collection {name!r} does not exist; create it with `chatbot index {name} <folder>`")
        return Collection.open(settings, name)
    except CollectionError as exc:
        fail(str(exc), code=2)


def _summary(name: str, report, version: str | None) -> str:
    lines = [
        f"Synced collection {name!r} ({version or 'empty'}) in {report.seconds:.1f} s: "
        f"{len(report.added)} added, {len(report.updated)} updated, {len(report.deleted)} deleted, "
        f"{len(report.unchanged)} unchanged, {len(report.failed)} failed, "
        f"{len(report.unsupported)} unsupported",
        f"  {report.chunks_total} chunks in the collection, {report.chunks_embedded} embedded by this sync"
        + (f" ({report.chunks_kept} more embedded by a sync that was stopped)" if report.chunks_kept else ""),
    ]
    for title, paths in (("added", report.added), ("updated", report.updated), ("deleted", report.deleted)):
        if paths and len(paths) <= 20:
            lines.append(f"{title}: " + ", ".join(paths))
    if report.failed:
        lines.append("failed:")
        lines += [f"  {path}: {reason}" for path, reason in sorted(report.failed.items())]
    if report.unsupported:
        lines.append("unsupported (not indexed): " + ", ".join(report.unsupported[:50]))
    return plain("\n".join(lines))  # file names are the folder's: a name may hold any character


class _Bar:
    """A tqdm progress bar with ETA on stderr, shown only when a sync takes more than a second."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, done: int, total: int, path: str) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, unit="file", delay=1.0, dynamic_ncols=True, leave=False)
        self.bar.set_postfix_str(plain(path)[-40:], refresh=False)
        self.bar.update(done - self.bar.n)  # honours `delay`: nothing is drawn for short syncs

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _report(collection, report, as_json: bool) -> None:
    version = collection.stats()["version"]
    if as_json:
        _print_json({"collection": collection.name, "version": version, **report.to_dict()})
    else:
        typer.echo(_summary(collection.name, report, version))


@app.command()
def index(
    ctx: typer.Context,
    collection: Annotated[str, typer.Argument(help="Collection name (created if missing).")],
    path: Annotated[Path, typer.Argument(help="Folder of documents to sync the collection with.")],
    as_json: JsonOption = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Keep syncing as files change (Ctrl-C stops).")
    ] = False,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Allow this sync to delete most or all of the collection's files, or to switch it to another "
            "folder (refused otherwise; --watch syncs after the first one are never allowed to).",
        ),
    ] = False,
) -> None:
    """Sync a collection with a folder: new files are added, changed ones re-indexed, deleted ones removed."""
    if not path.is_dir():
        fail(f"{path} is not a folder", code=2)
    col = _open(ctx, collection, must_exist=False)
    bar = _Bar()
    try:
        report = col.sync(path, progress=bar, allow_mass_delete=replace)
    except (CollectionLockedError, MassDeleteError) as exc:
        fail(str(exc))
    finally:
        bar.close()
    _report(col, report, as_json)
    if watch:
        from retrieval.watch import watch as watch_folder

        typer.echo(f"Watching {path} for changes (Ctrl-C stops)...", err=True)
        stop = threading.Event()
        try:
            watch_folder(col, path, lambda r: _report(col, r, as_json), stop)
        except KeyboardInterrupt:
            stop.set()


@app.command()
def search(
    ctx: typer.Context,
    collection: Annotated[str, typer.Argument(help="Collection to search.")],
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("-k", "--top", min=1, max=200, help="How many chunks to return.")] = 5,
    mode: Annotated[str | None, typer.Option(help="hybrid (default), bm25 or dense.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Search a collection; prints the best chunks with their scores and sources."""
    col = _open(ctx, collection, must_exist=True)
    try:
        found = col.search(query, k=k, mode=mode)
    except ValueError as exc:
        fail(str(exc), code=2)
    if as_json:
        _print_json([h.to_dict() for h in found])
        return
    if not found:
        typer.echo("no results")
    for rank, hit in enumerate(found, start=1):
        where = plain(hit.label)
        text = plain(" ".join(hit.text.split()))
        typer.echo(f"[{rank}] {hit.score:.3f}  {where}\n    {text[:300]}{'...' if len(text) > 300 else ''}")


@collections_app.command("list")
def list_collections(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the collections."""
    from retrieval.collection import Collection

    names = Collection.list(settings_of(ctx))
    if as_json:
        _print_json(names)
    else:
        typer.echo("\n".join(names) if names else "no collections")


@collections_app.command("stats")
def stats(
    ctx: typer.Context,
    collection: Annotated[str, typer.Argument(help="Collection name.")],
    as_json: JsonOption = False,
) -> None:
    """Files, chunks, last sync and failures of a collection."""
    info = _open(ctx, collection, must_exist=True).stats()
    if as_json:
        _print_json(info)
        return
    typer.echo(
        f"collection {info['name']}: {info['files']} files, {info['chunks']} chunks, "
        f"version {info['version']}"
    )
    typer.echo(
        f"last sync: {info['last_sync'] or 'never'}"
        + (f" from {plain(info['folder'])}" if info["folder"] else "")
    )
    for path, reason in sorted(info["failures"].items()):
        typer.echo(f"  failed {plain(path)}: {plain(reason)}")


@collections_app.command("delete")
def delete(
    ctx: typer.Context,
    collection: Annotated[str, typer.Argument(help="Collection name.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete a collection, its index and the files uploaded to it in the app (documents in a folder it was
    synced from are not touched)."""
    from chatbot.uploads import delete_collection

    settings = settings_of(ctx)
    if not yes:
        if as_json:
            fail("pass --yes to delete without confirmation", code=2)
        typer.confirm(f"Delete collection {collection!r}, its index and its uploaded files?", abort=True)
    try:
        uploads = delete_collection(settings, collection)
    except CollectionLockedError as exc:
        fail(str(exc))
    except CollectionError as exc:
        fail(str(exc), code=2)
    if as_json:
        _print_json({"deleted": collection, "uploads_deleted": uploads})
    else:
        also = f" and its {uploads} uploaded file{'s' if uploads != 1 else ''}" if uploads else ""
        typer.echo(f"deleted collection {collection!r}{also}")
