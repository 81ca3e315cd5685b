"""``chatbot api-keys create|list|revoke``: the keys that let clients use the HTTP API (``chatbot serve-api``)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from chatbot.cli.app import app, fail, settings_of

keys_app = typer.Typer(
    help="Create, list and revoke the HTTP API's keys (stored hashed in the data directory).",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="api-keys")


def _store(ctx: typer.Context):
    from chatbot.api_keys import ApiKeys

    return ApiKeys.of(settings_of(ctx).data_dir)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


@keys_app.command("create")
def create(
    ctx: typer.Context,
    owner: Annotated[
        str, typer.Argument(help="Who the key is for; their API conversations are theirs alone.")
    ],
) -> None:
    """Create a key and print it once (only its hash is kept): send it as `Authorization: Bearer KEY`."""
    try:
        key, token = _store(ctx).create(owner)
    except ValueError as exc:
        fail(str(exc), code=2)
    typer.echo(token)
    typer.echo(f"(key {key.id} for {key.owner}: shown only now; revoke it with `chatbot api-keys revoke {key.id}`)",
               err=True)  # fmt: skip


@keys_app.command("list")
def list_keys(ctx: typer.Context) -> None:
    """Every key: id, owner, created, revoked (never the key itself, which is not stored)."""
    keys = _store(ctx).list()
    if not keys:
        typer.echo("(no API keys: the API answers only on this machine's loopback address)")
    for key in keys:
        typer.echo(
            f"{key.id}  {key.owner:20}  created {_when(key.created_at)}  revoked {_when(key.revoked_at)}"
        )


@keys_app.command("revoke")
def revoke(
    ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="The key's id (from `list`).")]
) -> None:
    """Revoke a key: requests with it are refused from now on (the running server needs no restart)."""
    try:
        key = _store(ctx).revoke(key_id)
    except (KeyError, ValueError) as exc:
        fail(str(exc).strip("'\""))
    typer.echo(f"revoked key {key.id} of {key.owner}")
