"""Every LLM backend is a ChatBackend: the service calls its methods instead of probing for attributes."""

import inspect

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import HumanMessage

from chatbot.backends import (
    GivenChatModel,
    RemoteChatModel,
    approx_tokens,
    as_backend,
    build_llm,
    context_limit,
)
from chatbot.chat_model import ChatBackend
from chatbot.llm import LocalChatModel
from chatbot.service import ChatService
from chatbot.settings import GenerationSettings


@pytest.mark.parametrize("backend", [LocalChatModel, RemoteChatModel, GivenChatModel])
def test_every_backend_implements_the_base_class(backend):
    assert issubclass(backend, ChatBackend) and not inspect.isabstract(backend)


def test_a_backend_missing_a_method_cannot_be_built():
    class NoWindow(ChatBackend):
        _llm_type = "incomplete"

        def _stream(self, messages, stop=None, run_manager=None, generation=None, **kwargs):
            yield self._chunk("x", run_manager)

        def answering_model(self):
            return "incomplete"

        def count_tokens(self, messages):
            return 1

        def count_answer_tokens(self, text, pieces):
            return pieces

    with pytest.raises(TypeError, match="context_window"):
        NoWindow()


def test_the_local_backend_counts_with_its_tokenizer(settings):
    settings = settings.model_copy(
        update={"models": settings.models.model_copy(update={"engine": "transformers"})}
    )
    llm = build_llm(settings)
    assert isinstance(llm, LocalChatModel)
    assert llm.answering_model() == llm.generator.name == ChatService(settings, llm=llm).model_name()
    assert context_limit(settings, llm) == llm.context_window() == llm.generator.context_window
    ids = llm.generator.tokenizer("a few words", add_special_tokens=False)["input_ids"]
    assert llm.count_answer_tokens("a few words", pieces=1) == len(ids)
    capped = settings.model_copy(
        update={"models": settings.models.model_copy(update={"max_context_tokens": 99})}
    )
    assert context_limit(capped, llm) == 99


def test_a_given_model_streams_through_with_remote_counts(settings):
    seen = []

    class Recording(GenericFakeChatModel):
        def _stream(self, messages, stop=None, run_manager=None, **kwargs):
            seen.append(kwargs.get("generation"))
            yield from super()._stream(messages, stop, run_manager, **kwargs)

    llm = as_backend(Recording(messages=iter(["one two three"])), settings)
    assert isinstance(llm, GivenChatModel) and as_backend(llm, settings) is llm
    generation = GenerationSettings(max_new_tokens=7)
    pieces = [c.content for c in llm.bind(generation=generation).stream("hi")]
    assert "".join(pieces) == "one two three" and len([p for p in pieces if p]) > 1
    assert seen == [generation]  # the per-call settings reach the model, as when it was called directly
    messages = [HumanMessage("x" * 30)]
    assert llm.count_tokens(messages) == approx_tokens(messages) == 18
    assert llm.count_answer_tokens("one two three", pieces=5) == 5
    assert ChatService(settings, llm=llm).model_name() == settings.models.endpoint_model
