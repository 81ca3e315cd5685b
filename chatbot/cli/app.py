"""The Typer application and what every command shares: the --config option and error reporting."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NoReturn

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
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[log_handler()])


def settings_of(ctx: typer.Context) -> Settings:
    """The settings for this invocation, built once; a bad setting ends the command with exit code 2."""
    state: CliState = ctx.find_root().obj
    if state._settings is None:
        try:
            state._settings = load_settings(state.config_file)
        except SettingsError as exc:
            fail(str(exc), code=2)
    return state._settings


# C0 controls but tab and newline, DEL, and C1 controls (0x9b is a one-character CSI on some terminals); the
# ones that separate words (vertical tab, form feed, the separators, NEL, a lone carriage return) become spaces.
# Also the bidi embeddings, overrides and isolates: a terminal that does bidi would show "invoice\u202efdp.exe"
# as "invoiceexe.pdf" (the "Trojan Source" trick); no document text keeps them (retrieval.text.clean).
_TERMINAL_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\u202a-\u202e\u2066-\u2069]")
_TERMINAL_SPACE = re.compile(r"\r\n|[\x0b\x0c\r\x1c-\x1f\x85]")
_JSON_CONTROL = re.compile(r"[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def plain(text: str) -> str:
    """``text`` safe to write to a terminal: without the control characters that would make it run escape
    sequences (clear the screen, set the title, write the clipboard, move the cursor back over a line).
    Documents, answers quoting them, file names and stored messages all pass through this before they are
    printed for a person."""
    text = _TERMINAL_SPACE.sub(lambda m: "\n" if m.group() == "\r\n" else " ", text)
    return _TERMINAL_CONTROL.sub("", text)


def json_text(value: Any, **options: Any) -> str:
    """``value`` as JSON that is safe to write to a terminal: ``json.dumps`` escapes the C0 controls, and DEL,
    the C1 controls and the bidi controls (which it would write as they are, non-ASCII text being kept) are
    escaped here too."""
    text = json.dumps(value, ensure_ascii=False, **options)
    return _JSON_CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class PlainFormatter(logging.Formatter):
    """Log lines (a skipped document's name, say) pass through :func:`plain` too."""

    def format(self, record: logging.LogRecord) -> str:
        return plain(super().format(record))


def log_handler() -> logging.Handler:
    """The CLI's log output: stderr, ``LEVEL message``, through :func:`plain`."""
    handler = logging.StreamHandler()
    handler.setFormatter(PlainFormatter("%(levelname)s %(message)s"))
    return handler


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a clear error on stderr and exit with ``code``."""
    typer.echo(f"error: {plain(message)}", err=True)
    raise typer.Exit(code)
