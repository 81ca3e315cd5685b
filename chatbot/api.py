"""HTTP API over the chat service: an OpenAI-compatible ``POST /v1/chat/completions`` (streaming with
server-sent events) that answers with retrieval and returns the sources in an extra ``sources`` field, plus
endpoints for collections and conversations. Started by ``chatbot serve-api``.

Conversation state: with ``conversation_id`` the stored conversation is continued (and the new turn saved);
with ``store: true`` a new stored conversation is started (created once its first answer is complete);
otherwise the request's own earlier messages are the history, as OpenAI clients send them, and nothing is
stored. Conversations belong to the API key's owner: nobody else can list, read, rename or continue them.

The OpenAI objects are built from the ``openai`` package's types (chatbot/api_wire.py).

Safety (chatbot/api_guard.py): API keys, a request body cap, at most ``api.max_concurrent`` chat requests at
once (429 with Retry-After beyond), ``chat.answer_timeout``, and a client that disconnects stops its answer
and frees the model at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from chatbot.api_guard import BodyLimit, EventPump, Slots, caller_of, check_exposure
from chatbot.api_keys import ApiKeys
from chatbot.api_wire import MODEL_ID, chunk_event, completion, model_list
from chatbot.memory import ConversationNotFound
from chatbot.prompt import PromptTooLong
from chatbot.service import AnswerStopped, AnswerTimeout, ChatService, CollectionNotFound
from chatbot.settings import SettingsError, generation_with
from finetune.llamacpp import EngineBusy
from retrieval.collection import EmbeddingMismatch, validate_name
from retrieval.errors import CollectionError

log = logging.getLogger(__name__)


class ChatMessageIn(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we have no use for (n, user...)

    model: str = MODEL_ID
    messages: list[ChatMessageIn] = Field(min_length=1)
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    # Beyond the OpenAI API (vLLM takes the same names):
    top_k: int | None = None
    repetition_penalty: float | None = None
    num_beams: int | None = None
    collection: str | None = None
    conversation_id: str | None = None
    store: bool = False  # as in OpenAI's API: keep this exchange (here: as a new conversation)


class RenameRequest(BaseModel):
    title: str


def _error(
    status: int, message: str, kind: str = "invalid_request_error", headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"error": {"message": message, "type": kind}}, headers=headers
    )


def create_app(service: ChatService) -> FastAPI:
    """The FastAPI application for ``service``. A local model generates one answer at a time (its own lock);
    an OpenAI-compatible backend takes concurrent requests."""
    limits = service.settings.api
    # no /docs, /redoc or /openapi.json: they would answer without a key (docs/chat.md documents the API)
    app = FastAPI(title="Domain Assistant API", version="1", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit=limits.max_request_bytes)
    caller = Depends(caller_of(ApiKeys.of(service.settings.data_dir)))
    slots = Slots(limits.max_concurrent, limits.max_concurrent_per_key)
    started = int(time.time())

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in exc.errors()
        )
        return _error(422, f"malformed request: {problems}")

    # Starlette's class, which FastAPI's subclasses: the router's 404 and 405, and FastAPI's "There was an
    # error parsing the body", are raised as Starlette's own.
    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {404: "not_found", 401: "authentication_error", 413: "request_too_large"}
        message = _unreadable_body(exc) or str(exc.detail)
        return _error(exc.status_code, message, kinds.get(exc.status_code, "error"), exc.headers)

    @app.get("/health")
    async def health() -> dict[str, str]:  # async: answered on the event loop, never queued behind work
        return {"status": "ok"}

    @app.get("/v1/models", dependencies=[caller])
    def models() -> dict[str, Any]:
        return model_list(created=started)

    @app.get("/v1/collections", dependencies=[caller])
    def collections() -> dict[str, Any]:
        return {"collections": service.collections()}

    @app.get("/v1/conversations")
    def conversations(owner: str = caller) -> dict[str, Any]:
        return {"conversations": [asdict(c) for c in service.conversations.list(owner=owner)]}

    @app.get("/v1/conversations/{conv_id}")
    def conversation(conv_id: str, owner: str = caller) -> dict[str, Any]:
        try:
            info = service.conversations.get(conv_id, owner=owner)
            messages = service.conversations.messages(conv_id, owner=owner)
        except ConversationNotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        return {**asdict(info), "messages": [asdict(m) for m in messages]}

    @app.patch("/v1/conversations/{conv_id}")
    def rename(conv_id: str, body: RenameRequest, owner: str = caller) -> dict[str, Any]:
        try:
            service.conversations.rename(conv_id, body.title, owner=owner)
        except ConversationNotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        return asdict(service.conversations.get(conv_id, owner=owner))

    @app.delete("/v1/conversations/{conv_id}")
    def delete(conv_id: str, owner: str = caller) -> dict[str, Any]:
        try:
            service.conversations.delete(conv_id, owner=owner)
        except ConversationNotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        return {"deleted": conv_id}

    @app.post("/v1/chat/completions", response_model=None)
    async def completions(req: ChatCompletionRequest, request: Request, owner: str = caller) -> Any:
        question, history = _split(req)
        # OpenAI's newer name wins over the older one; an error names the one the client sent
        limit = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
        try:
            if req.collection is not None:
                validate_name(req.collection)  # "../etc" breaks the naming rule: nothing to create
            generation = generation_with(
                service.settings.generation,
                {
                    "temperature": req.temperature,
                    "top_p": req.top_p,
                    "max_new_tokens": getattr(req, limit),
                    "top_k": req.top_k,
                    "repetition_penalty": req.repetition_penalty,
                    "num_beams": req.num_beams,
                },
                names={"max_new_tokens": limit},
            )
        except (CollectionError, SettingsError) as exc:
            return _error(400, str(exc))
        kwargs = {
            "conversation_id": req.conversation_id,
            "collection": req.collection,
            "generation": generation,
            "history": None if req.conversation_id else history,
            "remember": req.conversation_id is not None or req.store,
            "owner": owner,
        }
        if refused := slots.take(owner):
            return _error(429, refused, "rate_limit_exceeded", {"Retry-After": str(limits.retry_after)})
        pump = EventPump(
            lambda stop: service.stream(question, stop=stop, **kwargs), lambda: slots.give_back(owner)
        )
        try:
            first = (
                await pump.next()
            )  # errors in the request (unknown collection...) surface before streaming
        except Exception as exc:
            pump.stop.set()
            return _failure(exc)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if req.stream:
            body = _sse(completion_id, req.model, first, pump)
            weakref.finalize(body, pump.stop.set)  # a response dropped before it started frees the model too
            return StreamingResponse(body, media_type="text/event-stream")
        return await _collect(completion_id, req.model, first, pump, request)

    return app


def serve(service: ChatService, host: str, port: int) -> None:
    """Run the API with uvicorn; refuses a network address while no API key exists (ExposureRefused)."""
    import uvicorn

    check_exposure(host, ApiKeys.of(service.settings.data_dir))
    uvicorn.run(create_app(service), host=host, port=port, log_level="info")


def _unreadable_body(exc: StarletteHTTPException) -> str | None:
    """What FastAPI's 400 "There was an error parsing the body" was about, when it was the encoding."""
    cause = exc.__cause__
    if exc.status_code == 400 and isinstance(cause, UnicodeDecodeError):
        return (
            f"malformed request: the body is not UTF-8 text (byte 0x{cause.object[cause.start]:02x} at offset "
            f"{cause.start}); send JSON encoded as UTF-8"
        )
    return None


def _failure(exc: Exception) -> JSONResponse:
    """The HTTP error for an answer that failed before its first event."""
    status, message, kind, headers = _described(exc)
    return _error(status, message, kind, headers)


def _described(exc: Exception) -> tuple[int, str, str, dict[str, str] | None]:
    """Status, message, error type and headers of a failed answer (a stream that already sent its status
    reports the same message and type in the stream)."""
    if isinstance(exc, CollectionNotFound | ConversationNotFound):
        return 404, str(exc), "not_found", None
    if isinstance(exc, EmbeddingMismatch):  # the server's settings, not the request: the operator re-indexes
        log.error("%s", exc)
        return 500, str(exc), "server_error", None
    if isinstance(exc, AnswerTimeout):
        return 504, str(exc), "timeout", None
    if isinstance(exc, EngineBusy):
        return 503, f"the model is busy: {exc}", "overloaded", {"Retry-After": "5"}
    if isinstance(exc, PromptTooLong | ValueError):
        return 400, str(exc), "invalid_request_error", None
    log.exception("answering failed", exc_info=exc)
    return 500, f"the answer failed: {type(exc).__name__}", "server_error", None


async def _collect(completion_id: str, model: str, first: Any, pump: EventPump, request: Request) -> Any:
    """The whole answer, for a non-streaming request; stops the model if the client disconnects meanwhile."""
    last = first
    try:
        while last is None or last.kind != "done":
            try:
                last = await pump.next(timeout=0.5)
            except TimeoutError:
                if await request.is_disconnected():
                    pump.stop.set()
                    return _error(499, "client disconnected", "client_closed")
                continue
            if last is None:
                return _error(500, "the answer ended without a result", "server_error")
    except AnswerStopped as exc:
        return _error(499, str(exc), "client_closed")
    except Exception as exc:
        return _failure(exc)
    finally:
        pump.stop.set()
    return completion(completion_id, model, last.answer)


def _split(req: ChatCompletionRequest) -> tuple[str, list[tuple[str, str]]]:
    """The last user message is the question; earlier user/assistant turns are the history."""
    if req.messages[-1].role != "user":
        raise HTTPException(400, "the last message must have role 'user' (it is the question)")
    history = [(m.role, m.content) for m in req.messages[:-1] if m.role in ("user", "assistant")]
    return req.messages[-1].content, history


async def _sse(completion_id: str, model: str, first: Any, pump: EventPump) -> AsyncIterator[str]:
    """Server-sent events. A client that disconnects cancels this generator at its ``await``: the ``finally``
    then stops the answer, and the model is free at its next token."""
    try:
        yield chunk_event(completion_id, model, ChoiceDelta(role="assistant", content=""))
        event = first
        while event is not None:
            if event.kind == "token":
                yield chunk_event(completion_id, model, ChoiceDelta(content=event.text))
            elif event.kind == "done":
                yield chunk_event(completion_id, model, ChoiceDelta(), "stop", answer=event.answer)
            try:
                event = await pump.next()
            except Exception as exc:  # after the first event the status is sent: report in the stream
                _, message, kind, _ = _described(exc)
                yield f"data: {json.dumps({'error': {'message': message, 'type': kind}})}\n\n"
                break
        yield "data: [DONE]\n\n"
    except asyncio.CancelledError:
        log.info("client disconnected from %s: answer stopped", completion_id)
        raise
    finally:
        pump.stop.set()
