"""The `chatbot` command: help, index + ask (text and JSON), errors with exit codes."""

import json
from contextlib import contextmanager
from pathlib import Path

from typer.testing import CliRunner

from chatbot.cli import app

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
runner = CliRunner()


@contextmanager
def scripted_endpoint(app_env: dict[str, str], settings, answer: str, times: int):
    """The CLI's environment with its model an OpenAI-compatible endpoint: our own API serving ``answer``
    ``times`` times, so that what the CLI prints of a known answer can be checked."""
    from api_helpers import serving
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    from chatbot.service import ChatService

    scripted = GenericFakeChatModel(messages=iter([answer] * times))
    with serving(ChatService(settings, llm=scripted)) as port:
        yield {
            **app_env,
            "APP_MODELS__BACKEND": "openai",
            "APP_MODELS__ENDPOINT_URL": f"http://127.0.0.1:{port}/v1",
        }


def test_help_documents_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("index", "ask", "chat", "search", "collections", "serve-api"):
        assert command in result.output
    for command in ("index", "ask", "chat", "serve-api"):
        sub = runner.invoke(app, [command, "--help"])
        assert sub.exit_code == 0 and "Usage" in sub.output


def test_index_then_ask_json(app_env):
    assert runner.invoke(app, ["index", "sample", str(SAMPLE)], env=app_env).exit_code == 0
    result = runner.invoke(app, ["ask", "How do I delete a collection?", "--json"], env=app_env)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert isinstance(payload["answer"], str)
    assert payload["sources"] and {"source", "text", "score"} <= set(payload["sources"][0])
    assert any(s["source"] in ("faq.md", "preguntas-frecuentes.md") for s in payload["sources"])


def test_ask_says_when_the_answer_is_unsure(app_env):
    runner.invoke(app, ["index", "sample", str(SAMPLE)], env=app_env)
    env = {**app_env, "APP_CHAT__UNSURE_HESITATION": "-50"}  # every answer the model writes is unsure
    result = runner.invoke(app, ["ask", "Where are conversations stored?"], env=env)
    assert result.exit_code == 0, result.output
    assert "(Not sure:" in result.stdout and "Sources:" in result.stdout
    result = runner.invoke(app, ["ask", "¿Dónde se guardan las conversaciones?"], env=env)
    assert (
        "(Respuesta insegura:" in result.stdout and "Not sure" not in result.stdout
    )  # the question's language
    result = runner.invoke(app, ["ask", "Where are conversations stored?", "--json"], env=env)
    assert json.loads(result.stdout)["unsure"] is True
    env["APP_CHAT__UNSURE_HESITATION"] = "50"  # none is
    result = runner.invoke(app, ["ask", "Where are conversations stored?"], env=env)
    assert result.exit_code == 0 and "(Not sure:" not in result.stdout


def test_ask_streams_text_and_lists_sources(app_env):
    runner.invoke(app, ["index", "sample", str(SAMPLE)], env=app_env)
    result = runner.invoke(app, ["ask", "Where are conversations stored?"], env=app_env)
    assert result.exit_code == 0, result.output
    assert "Sources:" in result.stdout and ".md" in result.stdout


def test_errors_are_clear_with_exit_codes(app_env):
    result = runner.invoke(app, ["ask", "hello", "--collection", "missing"], env=app_env)
    assert result.exit_code == 1 and "collection 'missing' does not exist" in result.output
    bad = {**app_env, "APP_GENERATION__TOP_P": "7"}
    result = runner.invoke(app, ["ask", "hello"], env=bad)
    assert result.exit_code == 2 and "APP_GENERATION__TOP_P" in result.output


def test_interactive_chat_commands(app_env):
    runner.invoke(app, ["index", "sample", str(SAMPLE)], env=app_env)
    session = "How do I delete a collection?\n/history\n/new\n/list\n/quit\n"
    result = runner.invoke(app, ["chat"], input=session, env=app_env)
    assert result.exit_code == 0, result.output
    assert "user> How do I delete a collection?" in result.output  # /history printed the stored turn
    assert "(new conversation)" in result.output
    assert "2 messages" in result.output  # /list


def test_a_damaged_index_or_database_is_one_clear_line_not_a_traceback(app_env, tmp_path):
    """What no command handles itself (a damaged vector file, a damaged record database) ends the real
    `chatbot` process with one line naming it, exit code 1."""
    import os
    import subprocess
    import sys

    assert runner.invoke(app, ["index", "sample", str(SAMPLE)], env=app_env).exit_code == 0
    version = max((Path(app_env["APP_DATA_DIR"]) / "collections" / "sample").glob("v*"))
    env = {**os.environ, **app_env}
    command = [sys.executable, "-c", "from chatbot.cli import main; main()", "search", "sample", "delete"]
    (version / "vectors.faiss").write_bytes((version / "vectors.faiss").read_bytes()[:100])
    damaged = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert damaged.returncode == 1 and "Traceback" not in damaged.stderr, damaged.stderr
    assert "cannot read the vector index" in damaged.stderr and "vectors.faiss" in damaged.stderr
    records = next(version.glob("*.sqlite"))
    records.write_bytes(b"SQLite format 3\x00" + b"\x00" * 80 + b"junk" * 100)
    damaged = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert damaged.returncode == 1 and "Traceback" not in damaged.stderr, damaged.stderr
    assert damaged.stderr.startswith("error:"), damaged.stderr


def test_ask_shows_the_quote_in_its_cited_source(app_env, settings):
    """Under the cited source, the words the answer quotes from it, in their paragraph (the model here: an
    OpenAI-compatible endpoint, our own API serving a scripted answer, so that the answer is known)."""
    from retrieval.collection import Collection

    Collection.open(settings, "sample").sync(SAMPLE)
    with scripted_endpoint(app_env, settings, "Run `chatbot collections delete NAME` [1].", times=2) as env:
        result = runner.invoke(app, ["ask", "How do I delete a collection?"], env=env)
        as_json = runner.invoke(app, ["ask", "How do I delete a collection?", "--json"], env=env)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    cited = next(i for i, line in enumerate(lines) if line.startswith(" *[1] faq.md"))
    assert lines[cited + 1] == (
        "      Run `chatbot collections delete NAME`. The documents on disk are not touched; only the index is removed."
    )
    first = json.loads(as_json.stdout)["sources"][0]
    assert first["text"][first["quote"][0] : first["quote"][1]] == "Run `chatbot collections delete NAME"


ESCAPES = ("\x1b", "\x07", "\x9b", "\r")  # escape, bell (ends an OSC), one-character CSI, carriage return


def test_documents_and_answers_cannot_drive_the_terminal(app_env, settings, tmp_path):
    """A document (and its file name) with terminal escape sequences, and an answer quoting them: `index`,
    `search`, `ask` and `chat` print the words and none of the control characters (an OSC 52 sequence would
    write the reader's clipboard, CSI 2J clear the screen, a carriage return hide what came before it)."""
    from retrieval.collection import Collection

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "backup\x1b[2J.md").write_text(
        "# Backups\n\nThe nightly backup starts at \x1b]52;c;cm0gLXJmIH4=\x07midnight and keeps 30 copies."
        "\x1b[8m hidden\x1b[0m\rOverwritten line.\x9b2J\n",
        encoding="utf-8",
    )
    indexed = runner.invoke(app, ["index", "sample", str(folder)], env=app_env)
    assert indexed.exit_code == 0, indexed.output
    assert "backup[2J.md" in indexed.stdout
    found = runner.invoke(app, ["search", "sample", "nightly backup"], env=app_env)
    assert found.exit_code == 0 and "starts at ]52;c;cm0gLXJmIH4=midnight" in found.stdout
    assert "Overwritten line.2J" in found.stdout  # a C1 control (U+009B) that indexing keeps in the text
    as_json = runner.invoke(app, ["search", "sample", "nightly backup", "--json"], env=app_env)
    assert "\\u009b2J" in as_json.stdout  # escaped in JSON, and the text itself intact
    assert "Overwritten line.\x9b2J" in json.loads(as_json.stdout)[0]["text"]

    Collection.open(settings, "sample").sync(folder)
    answer = "It starts at \x1b]52;c;cm0gLXJmIH4=\x07midnight [1].\x9b2J\r"
    with scripted_endpoint(app_env, settings, answer, times=3) as env:
        asked = runner.invoke(app, ["ask", "When does the nightly backup start?"], env=env)
        asked_json = runner.invoke(app, ["ask", "When does the nightly backup start?", "--json"], env=env)
        chatted = runner.invoke(
            app, ["chat"], input="When does the nightly backup start?\n/history\n/quit\n", env=env
        )
    assert asked.exit_code == 0 and chatted.exit_code == 0, asked.output + chatted.output
    assert "It starts at ]52;c;cm0gLXJmIH4=midnight [1]." in asked.stdout
    assert "backup[2J.md" in asked.stdout  # the cited source, named
    assert "user> When does the nightly backup start?" in chatted.stdout  # /history printed the turn
    assert json.loads(asked_json.stdout)["answer"].startswith("It starts at \x1b]52;")  # JSON: escaped, kept
    for result in (indexed, found, as_json, asked, asked_json, chatted):
        assert not any(c in result.stdout for c in ESCAPES), repr(result.stdout)
        # stderr carries the libraries' own progress bars, which redraw their line with a carriage return
        assert not any(c in result.stderr for c in ESCAPES[:3]), repr(result.stderr)


def test_bidi_controls_cannot_disguise_a_name_in_the_terminal():
    """A file name with a right-to-left override reads "invoiceexe.pdf" in a terminal that does bidi: the
    override is dropped from what is printed, and escaped (the name kept) in JSON."""
    from chatbot.cli.app import json_text, plain

    name = "invoice\u202efdp.exe"
    assert plain(f"{name} \u2066isolated\u2069 \u202aembedded\u202c") == "invoicefdp.exe isolated embedded"
    assert json_text({"source": name}) == '{"source": "invoice\\u202efdp.exe"}'
    assert json.loads(json_text({"source": name}))["source"] == name
