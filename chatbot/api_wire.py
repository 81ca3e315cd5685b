"""The OpenAI wire format of the HTTP API, built from the ``openai`` package's own types so that what we send
is what OpenAI clients parse.

Our additions ride along as extra keys (openai's models allow them): ``sources`` (the numbered passages, cited
or not, a cited one with where it holds the answer's quote), ``conversation_id``, ``abstained``, ``unsure`` (the model nearly declined: the documents may not hold
the answer) and ``hesitation`` (the number behind ``unsure``, for a client that draws its own line; null from a
backend that reports none), on the completion and on the last chunk of a stream.
Objects are dumped with ``exclude_unset``: the optional fields we never fill (logprobs, service_tier...) stay
off the wire, while those we set to None on purpose stay on it as null (``finish_reason`` of a chunk that is
not the last, ``conversation_id`` of a request that stores nothing), as OpenAI's own API sends them.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Literal

from openai.types import CompletionUsage, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta

from chatbot.service import ChatAnswer

MODEL_ID = "assistant"  # the one model the API serves: the service picks the real one from its settings


def model_list(created: int) -> dict[str, Any]:
    """``GET /v1/models``: the assistant, created when the server started."""
    model = Model(id=MODEL_ID, created=created, object="model", owned_by="local")
    return {"object": "list", "data": [model.model_dump(mode="json", exclude_unset=True)]}


def _extras(answer: ChatAnswer) -> dict[str, Any]:
    return {
        "sources": [asdict(s) for s in answer.sources],
        "conversation_id": answer.conversation_id,
        "abstained": answer.abstained,
        "unsure": answer.unsure,
        "hesitation": answer.hesitation,
    }


def completion(completion_id: str, model: str, answer: ChatAnswer) -> dict[str, Any]:
    """The JSON body of a non-streaming ``chat.completion``."""
    body = ChatCompletion(
        id=completion_id,
        object="chat.completion",
        created=int(time.time()),
        model=model,
        choices=[
            Choice(
                index=0,
                message=ChatCompletionMessage(role="assistant", content=answer.text),
                finish_reason="stop",
            )
        ],
        usage=CompletionUsage(
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            total_tokens=answer.prompt_tokens + answer.completion_tokens,
        ),
        **_extras(answer),
    )
    return body.model_dump(mode="json", exclude_unset=True)


def chunk_event(
    completion_id: str,
    model: str,
    delta: ChoiceDelta,
    finish: Literal["stop"] | None = None,
    answer: ChatAnswer | None = None,
) -> str:
    """One server-sent event of a stream: a ``chat.completion.chunk`` carrying ``delta``; the last one
    (``answer`` given) carries the finish reason and our extra keys."""
    body = ChatCompletionChunk(
        id=completion_id,
        object="chat.completion.chunk",
        created=int(time.time()),
        model=model,
        choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish)],
        **(_extras(answer) if answer is not None else {}),
    )
    return f"data: {body.model_dump_json(exclude_unset=True)}\n\n"
