"""``chatbot settings``: the effective settings, documented (also how settings.example.yaml is made)."""

from __future__ import annotations

from typing import Annotated

import typer

from chatbot.cli.app import app, settings_of

EXAMPLE_HEADER = (
    "# Every setting, with its default. Copy to settings.yaml, keep what you change, and pass it with\n"
    "# `chatbot --config settings.yaml ...` or APP_CONFIG_FILE=settings.yaml. APP_* variables override it:\n"
    "# APP_GENERATION__MAX_NEW_TOKENS=512. Regenerate: chatbot settings --defaults > settings.example.yaml\n"
)


@app.command("settings")
def show_settings(
    ctx: typer.Context,
    defaults: Annotated[
        bool, typer.Option("--defaults", help="Show the defaults instead of the values in force.")
    ] = False,
) -> None:
    """Print the settings in force (file + environment) as documented YAML."""
    from chatbot.settings import default_settings, settings_yaml

    if defaults:
        typer.echo(EXAMPLE_HEADER + settings_yaml(default_settings()))
    else:
        typer.echo(settings_yaml(settings_of(ctx)))
