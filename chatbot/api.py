"""HTTP API over the chat service: an OpenAI-compatible ``POST /v1/chat/completions`` (streaming with
server-sent events) that answers with retrieval and returns the sources in an extra ``sources`` field, plus
endpoints for collections and conversations. Started by ``chatbot serve-api``.

Conversation state: with ``conversation_id`` the stored conversation is continued (and the new turn saved);
without it, the request's own earlier messages are the history, as OpenAI clients send them, and nothing is
stored.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from chatbot.memory import ConversationNotFound
from chatbot.prompt import PromptTooLong
from chatbot.service import ChatService, CollectionNotFound
from chatbot.settings import SettingsError, generation_with


class ChatMessageIn(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we have no use for (n, user...)

    model: str = "assistant"
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


class RenameRequest(BaseModel):
    title: str


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind}})


def create_app(service: ChatService) -> FastAPI:
    """The FastAPI application for ``service``. A local model generates one answer at a time (its own lock);
    an OpenAI-compatible backend takes concurrent requests."""
    app = FastAPI(title="Domain Assistant API", version="1")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in exc.errors()
        )
        return _error(422, f"malformed request: {problems}")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), "not_found" if exc.status_code == 404 else "error")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "assistant", "object": "model", "owned_by": "local"}]}

    @app.get("/v1/collections")
    def collections() -> dict[str, Any]:
        return {"collections": service.collections()}

    @app.get("/v1/conversations")
    def conversations(owner: str | None = None) -> dict[str, Any]:
        return {"conversations": [asdict(c) for c in service.conversations.list(owner=owner)]}

    @app.get("/v1/conversations/{conv_id}")
    def conversation(conv_id: str) -> dict[str, Any]:
        try:
            info = service.conversations.get(conv_id)
            messages = service.conversations.messages(conv_id)
        except ConversationNotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        return {**asdict(info), "messages": [asdict(m) for m in messages]}

    @app.patch("/v1/conversations/{conv_id}")
    def rename(conv_id: str, body: RenameRequest) -> dict[str, Any]:
        try:
            service.conversations.rename(conv_id, body.title)
        except ConversationNotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        return asdict(service.conversations.get(conv_id))

    @app.delete("/v1/conversations/{conv_id}")
    def delete(conv_id: str) -> dict[str, Any]:
        try:
            service.conversations.delete(conv_id)
        except ConversationNotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        return {"deleted": conv_id}

    @app.post("/v1/chat/completions", response_model=None)
    def completions(req: ChatCompletionRequest) -> Any:
        question, history = _split(req)
        try:
            generation = generation_with(
                service.settings.generation,
                {
                    "temperature": req.temperature,
                    "top_p": req.top_p,
                    "max_new_tokens": req.max_completion_tokens or req.max_tokens,
                    "top_k": req.top_k,
                    "repetition_penalty": req.repetition_penalty,
                    "num_beams": req.num_beams,
                },
            )
        except SettingsError as exc:
            return _error(400, str(exc))
        kwargs = {
            "conversation_id": req.conversation_id,
            "collection": req.collection,
            "generation": generation,
            "history": None if req.conversation_id else history,
            "remember": req.conversation_id is not None,
        }
        events = service.stream(question, **kwargs)
        try:
            first = next(events)  # errors in the request (unknown collection...) surface before streaming
        except (CollectionNotFound, ConversationNotFound) as exc:
            return _error(404, str(exc), "not_found")
        except (PromptTooLong, ValueError) as exc:
            return _error(400, str(exc))
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if req.stream:
            return StreamingResponse(
                _sse(completion_id, req.model, first, events), media_type="text/event-stream"
            )
        last = first
        for last in events:  # noqa: B007 - the last event carries the answer
            pass
        return _completion(completion_id, req.model, last.answer)

    return app


def _split(req: ChatCompletionRequest) -> tuple[str, list[tuple[str, str]]]:
    """The last user message is the question; earlier user/assistant turns are the history."""
    if req.messages[-1].role != "user":
        raise HTTPException(400, "the last message must have role 'user' (it is the question)")
    history = [(m.role, m.content) for m in req.messages[:-1] if m.role in ("user", "assistant")]
    return req.messages[-1].content, history


def _sources(answer: Any) -> list[dict[str, Any]]:
    return [asdict(s) for s in answer.sources]


def _completion(completion_id: str, model: str, answer: Any) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": answer.text}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        },
        "sources": _sources(answer),
        "conversation_id": answer.conversation_id,
        "abstained": answer.abstained,
    }


def _chunk(
    completion_id: str, model: str, delta: dict[str, Any], finish: str | None = None, **extra: Any
) -> str:
    body = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def _sse(completion_id: str, model: str, first: Any, events: Iterator[Any]) -> Iterator[str]:
    yield _chunk(completion_id, model, {"role": "assistant", "content": ""})
    for event in _chain_first(first, events):
        if event.kind == "token":
            yield _chunk(completion_id, model, {"content": event.text})
        elif event.kind == "done":
            answer = event.answer
            yield _chunk(
                completion_id,
                model,
                {},
                "stop",
                sources=_sources(answer),
                conversation_id=answer.conversation_id,
                abstained=answer.abstained,
            )
    yield "data: [DONE]\n\n"


def _chain_first(first: Any, events: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from events
