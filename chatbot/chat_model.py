"""What the chat service needs of an LLM backend, as one abstract base class.

Every backend (:class:`chatbot.llm.LocalChatModel`, :class:`chatbot.backends.RemoteChatModel`, and
:class:`chatbot.backends.GivenChatModel` around a model the caller hands in) is a LangChain chat model that
streams, takes a per-call ``generation=GenerationSettings`` argument, and answers the questions the prompt
budget and the answer's statistics ask: how big its window is, how many tokens a prompt or an answer takes,
and which model is answering. The service calls these methods directly instead of probing for attributes.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field

from chatbot.settings import GenerationSettings


@dataclass
class AnswerSignals:
    """What a backend reports about one answer beside its text, set once the answer has ended. The chain binds
    one to the model call as ``signals=``; a backend that cannot see the model's logits (a remote endpoint)
    leaves it empty."""

    hesitation: float | None = None  # see finetune.decoding.FirstTokenBias


def report(kwargs: dict[str, Any], hesitation: float | None) -> None:
    """Hand ``hesitation`` to the caller's :class:`AnswerSignals`, if the call was given one."""
    signals = kwargs.get("signals")
    if isinstance(signals, AnswerSignals):
        signals.hesitation = hesitation


class ChatBackend(BaseChatModel):
    """A chat model whose answer is its stream, joined: subclasses write ``_stream`` (yielding
    :meth:`_chunk`s) and the four methods below. (``BaseChatModel`` is already abstract: pydantic's metaclass
    derives from ``ABCMeta``, so a subclass missing one of them cannot be instantiated.)"""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    generation: GenerationSettings = Field(default_factory=GenerationSettings)

    @abstractmethod
    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        generation: GenerationSettings | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """The answer to ``messages``, piece by piece, generated with ``generation`` (default: the model's
        own settings); ends early once :data:`chatbot.cancel.STOP` is set."""

    def beam_search(self) -> bool:
        """Whether ``generation.num_beams`` > 1 can be served (not by llama.cpp, which decodes one beam)."""
        return True

    @abstractmethod
    def answering_model(self) -> str:
        """What answers, as reports name it: the local generator with its version, or the endpoint's model."""

    @abstractmethod
    def context_window(self) -> int:
        """Tokens the prompt and the answer share, by the model's own limit."""

    @abstractmethod
    def count_tokens(self, messages: list[BaseMessage]) -> int:
        """Tokens ``messages`` take as a prompt (exact, or an over-estimate: the budget must stay safe)."""

    @abstractmethod
    def count_answer_tokens(self, text: str, pieces: int) -> int:
        """Tokens in an answer ``text`` that streamed in ``pieces`` pieces."""

    def busy(self) -> bool:
        """Whether the model is generating (or has answers waiting) right now."""
        return False

    def close(self) -> None:
        """Free what this backend holds (its engine) once the answers already started are done; the service
        calls it when another version replaces this one."""

    @staticmethod
    def _chunk(text: str, run_manager: CallbackManagerForLLMRun | None) -> ChatGenerationChunk:
        chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
        if run_manager:
            run_manager.on_llm_new_token(text, chunk=chunk)
        return chunk

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = "".join(str(c.message.content) for c in self._stream(messages, stop, run_manager, **kwargs))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])
