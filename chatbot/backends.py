"""Building the LLM the chain talks to, chosen by ``models.backend``, and what the prompt budget needs of it.

Both backends are LangChain chat models that take a per-call ``generation=GenerationSettings`` argument:
- ``local``: :class:`chatbot.llm.LocalChatModel`, transformers in this process;
- ``openai``: :class:`RemoteChatModel`, any OpenAI-compatible server (vLLM, TGI, llama.cpp, Ollama).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk
from pydantic import Field

from chatbot.cancel import STOP
from chatbot.llm import StreamingChatModel
from chatbot.settings import GenerationSettings, Settings

REMOTE_CONTEXT_DEFAULT = 4096  # when the server's window is unknown and models.max_context_tokens is unset


class RemoteChatModel(StreamingChatModel):
    """An OpenAI-compatible chat endpoint, streaming, with our generation settings mapped onto its API."""

    client: Any = Field(exclude=True, description="a langchain_openai.ChatOpenAI")

    @property
    def _llm_type(self) -> str:
        return "openai-compatible"

    @staticmethod
    def request_params(gen: GenerationSettings) -> dict[str, Any]:
        """OpenAI parameters, plus the ones vLLM/TGI/llama.cpp take beyond the OpenAI API in ``extra_body``."""
        return {
            "temperature": gen.temperature,
            "top_p": gen.top_p,
            "max_tokens": gen.max_new_tokens,
            "extra_body": {
                "top_k": gen.top_k if gen.top_k > 0 else -1,
                "repetition_penalty": gen.repetition_penalty,
                **({"best_of": gen.num_beams, "use_beam_search": True} if gen.num_beams > 1 else {}),
            },
        }

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        generation: GenerationSettings | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        params = self.request_params(generation or self.generation)
        halt = STOP.get()
        for piece in self.client.stream(messages, stop=stop, **params):
            if halt is not None and halt.is_set():
                break  # leaving the loop closes the HTTP stream: the server stops generating
            text = str(piece.content)
            if text:
                yield self._chunk(text, run_manager)


def build_llm(settings: Settings) -> BaseChatModel:
    """The LangChain chat model for ``settings.models``."""
    models = settings.models
    if models.backend == "openai":
        try:
            from langchain_openai import ChatOpenAI
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise ImportError("models.backend = 'openai' needs `pip install langchain-openai`") from exc
        client = ChatOpenAI(
            base_url=models.endpoint_url,
            model=models.endpoint_model,
            api_key=models.endpoint_api_key,
            timeout=models.endpoint_timeout,
            max_retries=1,
            streaming=True,
        )
        return RemoteChatModel(client=client, generation=settings.generation)

    from chatbot.llm import LocalChatModel
    from finetune.models import load_generator

    return LocalChatModel(generator=load_generator(settings), generation=settings.generation)


def context_window(settings: Settings, llm: Any) -> int:
    """Tokens the prompt and the answer share: the setting if given, else the model's own limit."""
    if settings.models.max_context_tokens:
        return settings.models.max_context_tokens
    generator = getattr(llm, "generator", None)
    return generator.context_window if generator is not None else REMOTE_CONTEXT_DEFAULT


def token_counter(llm: Any) -> Any:
    """Exact token counts for a local model; for a remote one, 1 token per 3 characters (over-estimates
    English and Spanish text, which average ~4 characters a token, so the budget stays on the safe side)."""
    if hasattr(llm, "count_tokens"):
        return llm.count_tokens

    def approx(messages: list[BaseMessage]) -> int:
        return sum(len(str(m.content)) // 3 + 8 for m in messages)

    return approx
