"""Building the LLM the chain talks to, chosen by ``models.backend``, and the window its prompts must fit.

Every backend is a :class:`chatbot.chat_model.ChatBackend`:
- ``local``: :class:`chatbot.llm.EngineChatModel`, llama.cpp in this process (``models.engine``: on the CPU
  by default), or :class:`chatbot.llm.LocalChatModel`, transformers in this process;
- ``openai``: :class:`RemoteChatModel`, any OpenAI-compatible server (vLLM, TGI, llama.cpp, Ollama);
- :class:`GivenChatModel`: any other LangChain chat model a caller hands to the service (tests, embedding).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk
from pydantic import Field

from chatbot.cancel import STOP
from chatbot.chat_model import ChatBackend
from chatbot.settings import GenerationSettings, Settings

log = logging.getLogger(__name__)

REMOTE_CONTEXT_DEFAULT = 4096  # when the server's window is unknown and models.max_context_tokens is unset


def approx_tokens(messages: list[BaseMessage]) -> int:
    """1 token per 3 characters, for a model whose tokenizer is out of reach: over-estimates English and
    Spanish text (~4 characters a token), so the budget stays on the safe side."""
    return sum(len(str(m.content)) // 3 + 8 for m in messages)


class _WithoutTokenizer(ChatBackend):
    """What a backend without a tokenizer at hand counts: approximate prompts, and an answer's streamed pieces
    (OpenAI-compatible servers stream one token per piece)."""

    def context_window(self) -> int:
        return REMOTE_CONTEXT_DEFAULT

    def count_tokens(self, messages: list[BaseMessage]) -> int:
        return approx_tokens(messages)

    def count_answer_tokens(self, text: str, pieces: int) -> int:
        return pieces


class RemoteChatModel(_WithoutTokenizer):
    """An OpenAI-compatible chat endpoint, streaming, with our generation settings mapped onto its API."""

    client: Any = Field(exclude=True, description="a langchain_openai.ChatOpenAI")

    @property
    def _llm_type(self) -> str:
        return "openai-compatible"

    def answering_model(self) -> str:
        return self.client.model_name

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


class GivenChatModel(_WithoutTokenizer):
    """Any LangChain chat model a caller hands to :class:`chatbot.service.ChatService` (a scripted one in
    tests, one an application embeds), as a backend: its stream passed through, the counts of a remote one."""

    model: BaseChatModel = Field(exclude=True)
    label: str = Field(description="what answering_model reports: the endpoint model named in the settings")

    @property
    def _llm_type(self) -> str:
        return f"given-{self.model._llm_type}"

    def answering_model(self) -> str:
        return self.label

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        generation: GenerationSettings | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        config = {"callbacks": run_manager.get_child()} if run_manager else None
        # ``generation`` goes on as a keyword, as when the model was called directly: models that ignore it
        # (LangChain's take ``**kwargs``) still work.
        if generation is not None:
            kwargs["generation"] = generation
        for local_only in ("sources", "question", "signals"):  # the local models' quoting rule, drafts and
            # hesitation; another model would reject the keywords
            kwargs.pop(local_only, None)
        for piece in self.model.stream(messages, config, stop=stop, **kwargs):
            if text := str(piece.content):
                yield self._chunk(text, run_manager)


def as_backend(llm: BaseChatModel, settings: Settings) -> ChatBackend:
    """``llm`` itself when it is a backend already, else ``llm`` wrapped as a :class:`GivenChatModel`."""
    if isinstance(llm, ChatBackend):
        return llm
    return GivenChatModel(model=llm, label=settings.models.endpoint_model, generation=settings.generation)


def build_llm(settings: Settings) -> ChatBackend:
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

    if (why := engine_refusal(settings)) is None:
        try:
            return build_engine_llm(settings)
        except Exception as exc:  # the conversion or the engine failed: transformers keeps the chat answering
            log.warning(
                "llama.cpp cannot serve %s (%s); the chat uses transformers", settings.models.generator, exc
            )
    elif settings.models.engine == "llama.cpp":
        log.warning("models.engine = 'llama.cpp' cannot be used: %s; the chat uses transformers", why)
    from chatbot.llm import LocalChatModel
    from finetune.models import load_generator

    return LocalChatModel(generator=load_generator(settings), generation=settings.generation)


def engine_refusal(settings: Settings) -> str | None:
    """Why the local generator will not run on llama.cpp (None: it will): the ``models.engine`` setting, a GPU,
    transformers-only settings (int8, beam search), or llama.cpp missing on this machine."""
    models = settings.models
    if models.engine == "transformers":
        return "models.engine = 'transformers'"
    from finetune.device import select_device

    if select_device(models.device).type != "cpu":
        return f"the model runs on {models.device} (llama.cpp serves the CPU here)"
    if models.quantize != "none":
        return f"models.quantize = {models.quantize!r} is a transformers option"
    if settings.generation.num_beams > 1:
        return "generation.num_beams > 1 (beam search) is a transformers option"
    if importlib.util.find_spec("ik_llama_cpp") is None:
        return "the llama.cpp engine is not installed (pip install ik-llama-cpp-python)"
    return None


def build_engine_llm(settings: Settings) -> ChatBackend:
    """The configured model on the llama.cpp engine, converted to GGUF on first use (cached)."""
    from chatbot.llm import EngineChatModel
    from finetune.llamacpp import EngineProcess
    from finetune.models import load_engine_model

    loaded = load_engine_model(settings)
    models = settings.models
    engine = EngineProcess(
        loaded.path,
        window=loaded.context_window,
        pool=models.engine_kv_tokens,
        slots=models.engine_slots,
        queue_limit=models.engine_queue,
        threads=models.engine_threads,
        prompt_cache=models.engine_prompt_cache,
    )
    log.info("llama.cpp serves %s from %s", loaded.name, loaded.path.name)
    return EngineChatModel(
        engine=engine,
        tokenizer=loaded.tokenizer,
        name=loaded.name,
        window=loaded.context_window,
        generation=settings.generation,
    )


def context_limit(settings: Settings, llm: ChatBackend) -> int:
    """Tokens the prompt and the answer share: ``models.max_context_tokens`` if given, else the model's own."""
    return settings.models.max_context_tokens or llm.context_window()
