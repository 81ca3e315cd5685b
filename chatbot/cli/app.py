"""The Typer application and what every command shares: the --config option and error reporting."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from chatbot.settings import CONFIG_ENV_VAR, Settings, SettingsError, load_settings

app = typer.Typer(
    name="chatbot",
    help="Domain assistant: index document collections, ask questions grounded in them, fine-tune the model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@dataclass
class CliState:
    config_file: Path | None
    _settings: Settings | None = field(default=None, repr=False)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", envvar=CONFIG_ENV_VAR, help="YAML settings file (APP_* variables override it)."
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
) -> None:
    ctx.obj = CliState(config_file=config)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )


def settings_of(ctx: typer.Context) -> Settings:
    """The settings for this invocation, built once; a bad setting ends the command with exit code 2."""
    state: CliState = ctx.find_root().obj
    if state._settings is None:
        try:
            state._settings = load_settings(state.config_file)
        except SettingsError as exc:
            fail(str(exc), code=2)
    return state._settings


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a clear error on stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
