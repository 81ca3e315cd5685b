"""``chatbot ask`` and ``chatbot chat``: questions answered from a collection, with cited sources."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from chatbot.cli.app import app, fail, json_text, plain, settings_of


def _service(ctx: typer.Context):  # heavy imports stay out of `chatbot --help`
    from chatbot.service import ChatService

    return ChatService(settings_of(ctx))


def _unsure(question: str) -> str:
    """The mark of an answer given close to declining, in the question's language."""
    from chatbot.language import detect_language
    from chatbot.prompt import UNSURE

    return f"({UNSURE[detect_language(question)]})"


def _print_sources(sources: list) -> None:
    if not sources:
        return
    from chatbot.citations import quote_context

    typer.echo("\nSources:")
    for s in sources:
        mark = "*" if s.cited else " "
        typer.echo(f" {mark}[{s.number}] {plain(s.label)} (score {s.score:.3f})")
        if s.quote:  # the words the answer quotes, in their paragraph (bold on a terminal)
            before, quote, after = quote_context(s.text, s.quote)
            quote = typer.style(plain(quote), bold=True)
            typer.echo(f"      {plain(before)}{quote}{plain(after)}")


@app.command()
def ask(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help="The question to answer.")],
    collection: Annotated[
        str | None,
        typer.Option("--collection", "-C", help="Collection to search (default: chat.collection)."),
    ] = None,
    conversation: Annotated[
        str | None, typer.Option("--conversation", help="Continue this conversation (its id).")
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help='Print {"answer", "sources": [{"source", "text", "score"}]} as JSON.'),
    ] = False,
) -> None:
    """Answer one question from the documents, citing the sources it used."""
    from chatbot.memory import ConversationNotFound
    from chatbot.service import CollectionNotFound

    service = _service(ctx)
    try:
        if as_json:
            result = service.answer(question, conversation_id=conversation, collection=collection)
            payload = {
                "answer": result.text,
                "sources": [
                    {
                        "source": s.source,
                        "text": s.text,
                        "score": s.score,
                        "number": s.number,
                        "cited": s.cited,
                        "title": s.title,
                        "page": s.page,
                        "quote": s.quote,
                        "quote_utf16": s.quote_utf16,
                    }
                    for s in result.sources
                ],
                "conversation_id": result.conversation_id,
                "abstained": result.abstained,
                "unsure": result.unsure,
            }
            typer.echo(json_text(payload, indent=2))
            return
        for event in service.stream(question, conversation_id=conversation, collection=collection):
            if event.kind == "token":
                sys.stdout.write(plain(event.text))
                sys.stdout.flush()
            elif event.kind == "done":
                typer.echo("")
                if event.answer.unsure:
                    typer.echo(_unsure(question))
                _print_sources(event.sources)
                typer.echo(f"\n(conversation {event.answer.conversation_id})", err=True)
    except (CollectionNotFound, ConversationNotFound, ValueError) as exc:
        fail(str(exc))


@app.command("serve-api")
def serve_api(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Serve the HTTP API: OpenAI-compatible /v1/chat/completions with sources, collections, conversations.
    A network address needs an API key first (`chatbot api-keys create NAME`)."""
    from chatbot.api import serve
    from chatbot.api_guard import ExposureRefused

    try:
        serve(_service(ctx), host, port)
    except ExposureRefused as exc:
        fail(str(exc), code=2)


CHAT_HELP = """Commands: /new (new conversation), /history (this conversation), /list (all conversations),
/open ID (continue a conversation), /quit. Anything else is a question."""


@app.command()
def chat(
    ctx: typer.Context,
    collection: Annotated[
        str | None,
        typer.Option("--collection", "-C", help="Collection to search (default: chat.collection)."),
    ] = None,
    conversation: Annotated[
        str | None, typer.Option("--conversation", help="Continue this conversation.")
    ] = None,
) -> None:
    """Chat interactively in the terminal, with streaming answers and conversation memory."""
    from chatbot.memory import ConversationNotFound
    from chatbot.service import CollectionNotFound

    service = _service(ctx)
    typer.echo(CHAT_HELP)
    while True:
        try:
            line = input("\nyou> ").strip()
        except (EOFError, KeyboardInterrupt):
            typer.echo("")
            return
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return
        if line == "/new":
            conversation = None
            typer.echo("(new conversation)")
            continue
        if line == "/list":
            for c in service.conversations.list():
                typer.echo(f"{c.id}  {c.messages:3d} messages  {plain(c.title)}")
            continue
        if line.startswith("/open "):
            wanted = line.split(maxsplit=1)[1]
            if service.conversations.exists(wanted):
                conversation = wanted
                typer.echo(f"(continuing {wanted})")
            else:
                typer.echo(f"no conversation with id {plain(repr(wanted))}")
            continue
        if line == "/history":
            if conversation is None:
                typer.echo("(no messages yet)")
            else:
                for m in service.conversations.messages(conversation):
                    typer.echo(f"{m.role}> {plain(m.content)}")
            continue
        try:
            typer.echo("assistant> ", nl=False)
            for event in service.stream(line, conversation_id=conversation, collection=collection):
                if event.kind == "token":
                    sys.stdout.write(plain(event.text))
                    sys.stdout.flush()
                elif event.kind == "done":
                    conversation = event.answer.conversation_id
                    typer.echo("")
                    if event.answer.unsure:
                        typer.echo(_unsure(line))
                    _print_sources(event.sources)
        except (CollectionNotFound, ConversationNotFound, ValueError) as exc:
            typer.echo(f"\nerror: {plain(str(exc))}")
