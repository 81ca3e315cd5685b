from pathlib import Path

from typer.testing import CliRunner

from chatbot.cli import app
from chatbot.settings import load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "settings.example.yaml"


def test_example_file_lists_every_default_and_is_current():
    """settings.example.yaml is `chatbot settings --defaults`: regenerate it when a setting changes."""
    result = CliRunner().invoke(app, ["settings", "--defaults"])
    assert result.exit_code == 0
    assert result.stdout == EXAMPLE.read_text(encoding="utf-8")


def test_example_file_loads_as_settings():
    settings = load_settings(EXAMPLE)
    assert settings.models.generator == "embedded"
