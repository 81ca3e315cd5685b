"""The chat service: the one place where a question becomes a grounded, cited, remembered answer.

The CLI, the Streamlit app and the HTTP API all call :class:`ChatService`; ``answer`` is ``stream`` consumed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Literal

from langchain_core.language_models.chat_models import BaseChatModel

from chatbot.cancel import STOP
from chatbot.chat_model import AnswerSignals, ChatBackend
from chatbot.citations import cited_numbers, quoted_span
from chatbot.memory import Conversations
from chatbot.prompt import BuiltPrompt, is_abstention
from chatbot.settings import GenerationSettings, Settings
from retrieval.errors import SettingsError
from retrieval.types import Hit

log = logging.getLogger(__name__)


class CollectionNotFound(LookupError):
    pass


class QuestionTooLong(ValueError):
    """The question is over ``chat.max_question_chars``."""


class AnswerTimeout(TimeoutError):
    """The answer took longer than ``chat.answer_timeout``; generation was stopped."""


class AnswerStopped(RuntimeError):
    """The caller's stop event ended the answer before it was complete (nothing was stored)."""


@dataclass
class Source:
    """A passage shown to the model, numbered as in the prompt."""

    number: int
    source: str
    text: str
    score: float
    label: str
    title: str | None = None
    page: int | None = None
    cited: bool = False
    # where ``text`` holds what the answer quotes from it (start and end offsets), when it is cited and the
    # quote is found (chatbot.citations.quoted_span): what the chat page shows under the answer
    quote: list[int] | None = None
    # the same offsets in UTF-16 code units, as a JavaScript string indexes ``text`` (they differ from
    # ``quote`` when a character outside the Basic Multilingual Plane, an emoji, comes before the quote)
    quote_utf16: list[int] | None = None

    @classmethod
    def from_hit(cls, number: int, hit: Hit, cited: bool, answer: str = "") -> Source:
        span = quoted_span(answer, number, hit.text) if cited else None
        return cls(
            number,
            hit.source,
            hit.text,
            hit.score,
            hit.label,
            hit.title,
            hit.page,
            cited,
            list(span) if span else None,
            [utf16_offset(hit.text, i) for i in span] if span else None,
        )


def utf16_offset(text: str, index: int) -> int:
    """The offset in UTF-16 code units of ``text``'s code point ``index``: a character above U+FFFF takes two."""
    return index + sum(1 for c in text[:index] if ord(c) > 0xFFFF)


@dataclass
class ChatAnswer:
    text: str
    sources: list[Source]
    conversation_id: str | None = None
    message_id: int | None = None
    query: str = ""
    abstained: bool = False
    # the model nearly declined: its hesitation at the first token (chatbot.chat_model.AnswerSignals) was above
    # chat.unsure_hesitation; None when the backend reports none
    unsure: bool = False
    hesitation: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds_to_first_token: float | None = None
    seconds_generating: float | None = None  # from the first streamed piece to the end
    tokens_per_second: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ChatEvent:
    kind: Literal["sources", "token", "done"]
    text: str = ""
    sources: list[Source] = field(default_factory=list)
    answer: ChatAnswer | None = None


# Model versions held loaded at once (the current one, and those users pick in the browser); see llm_for.
MAX_LOADED_VERSIONS = 3


class ChatService:
    """Answers questions from a collection with the configured LLM; remembers conversations."""

    def __init__(self, settings: Settings, llm: BaseChatModel | None = None) -> None:
        from chatbot.backends import as_backend

        self.settings = settings
        # given by the caller (tests, embedding): never reloaded
        self._fixed_llm = as_backend(llm, settings) if llm is not None else None
        # the weights a version resolves to ("current" and its id load once) -> LLM, least recently used first
        self._llms: OrderedDict[str | None, ChatBackend] = OrderedDict()
        # (collection, id(llm)) -> (llm, chain)
        self._chains: dict[tuple[str, int], tuple[ChatBackend, Any]] = {}
        self._collections: dict[str, Any] = {}  # one open Collection per name, shared by its chains
        self._names: dict[str, str | None] = {}  # models.version as asked ("current", "v0003") -> its weights
        self._lock = threading.Lock()

    @cached_property
    def conversations(self) -> Conversations:
        return Conversations(self.settings.data_dir / "conversations.sqlite")

    @property
    def llm(self) -> ChatBackend:
        return self.llm_for(None)

    def llm_for(self, version: str | None) -> ChatBackend:
        """The LLM for ``version`` (default: ``models.version``). The registry is looked at on every call, so
        promoting or rolling back a version takes effect at the next question, without a restart."""
        if self._fixed_llm is not None:
            return self._fixed_llm
        from chatbot.backends import build_llm
        from finetune.models import version_key

        settings = self._settings_for(version)
        key = version_key(settings) if settings.models.backend == "local" else "endpoint"
        name = settings.models.version
        with self._lock:
            if key not in self._llms:
                log.info("Loading the generator for version %s", key or "base")
                self._llms[key] = build_llm(settings)
            self._llms.move_to_end(key)
            before, self._names[name] = self._names.get(name, key), key
            if before != key and before not in self._names.values():  # a version promoted since
                self._drop(before)
            # versions picked in the browser are loaded on demand; the least recently used beyond
            # MAX_LOADED_VERSIONS are closed
            default = self._names.get(self.settings.models.version, key)
            while len(self._llms) > MAX_LOADED_VERSIONS:
                self._drop(next(k for k in self._llms if k not in (default, key)))
            return self._llms[key]

    def _drop(self, key: str | None) -> None:
        """Close a loaded version (its engine is freed once its running answers end); the caller holds the lock."""
        if (gone := self._llms.pop(key, None)) is None:
            return
        self._names = {n: k for n, k in self._names.items() if k != key}
        self._chains = {k: v for k, v in self._chains.items() if v[0] is not gone}
        gone.close()

    def _settings_for(self, version: str | None) -> Settings:
        if version is None or version == self.settings.models.version:
            return self.settings
        models = self.settings.models.model_copy(update={"version": version})
        return self.settings.model_copy(update={"models": models})

    def model_name(self, version: str | None = None) -> str:
        """What answers: the local generator with its version, or the remote endpoint's model."""
        return self.llm_for(version).answering_model()

    def collections(self) -> list[str]:
        from retrieval.collection import Collection

        return Collection.list(self.settings)

    def _chain(self, collection: str, llm: ChatBackend, search: Any = None) -> Any:
        """The chain answering from ``collection`` with ``llm``: built once per pair, the collection opened
        once whatever the version; ``search`` (evaluation) gives a chain of its own, not kept."""
        key = (collection, id(llm))
        with self._lock:
            cached = self._chains.get(key)
            open_col = self._collections.get(collection)
            # a collection deleted since: what was open for it goes
            if open_col is not None and not open_col.root.is_dir():
                self._collections.pop(collection).close()
                self._chains = {k: v for k, v in self._chains.items() if k[0] != collection}
                cached = None
        if search is None and cached is not None and cached[0] is llm:  # (an id is reused once it is gone)
            return cached[1]
        from chatbot.backends import context_limit
        from chatbot.chain import build_chain
        from retrieval.collection import Collection

        if collection not in Collection.list(self.settings):
            raise CollectionNotFound(
                f"collection {collection!r} does not exist; create it with "
                f"`chatbot index {collection} <folder>` (existing: {', '.join(self.collections()) or 'none'})"
            )
        limit = context_limit(self.settings, llm)
        if search is not None:
            return build_chain(llm, search, llm.count_tokens, limit, self.settings.chat)
        with self._lock:
            col = self._collections.get(collection)
            if col is None:
                col = self._collections[collection] = Collection.open(self.settings, collection)
            chain = build_chain(
                llm, lambda q, k: col.search(q, k), llm.count_tokens, limit, self.settings.chat
            )
            self._chains[key] = (llm, chain)
            return chain

    def stream(
        self,
        question: str,
        *,
        conversation_id: str | None = None,
        collection: str | None = None,
        generation: GenerationSettings | None = None,
        history: list[tuple[str, str]] | None = None,
        remember: bool = True,
        model_version: str | None = None,
        owner: str | None = None,
        stop: threading.Event | None = None,
        search: Any = None,
        language: str | None = None,
    ) -> Iterator[ChatEvent]:
        """Answer ``question``: a ``sources`` event, ``token`` events as the answer streams, then ``done``.

        The conversation so far comes from ``conversation_id`` (stored) or ``history`` (given by the caller,
        as ``(role, content)`` pairs). With ``remember`` the question and answer are appended to
        ``conversation_id``; when it is None a conversation is created, once the answer is complete (a failed
        answer leaves nothing behind). ``owner`` (None: anyone, for the operator's CLI) must own
        ``conversation_id`` and owns a new one. ``search`` (``(query, k) -> hits``) replaces the collection's
        own search for this question (the evaluation asks "as if a document were absent"). ``language`` ('en',
        'es': the reader's interface) is the language of the assistant's own sentences (declining) when the
        question's words do not tell; else ``ui.language``, else English.

        Closing the iterator early, or setting ``stop`` (a client that went away), stops generation and frees
        the model at once; so does ``chat.answer_timeout`` running out (AnswerTimeout).
        """
        question = self._checked(question)
        history = self._history(conversation_id, history, owner)
        llm = self.llm_for(model_version)
        generation = generation or self.settings.generation
        if generation.num_beams > 1 and not llm.beam_search():  # before any event: the API answers 400
            raise SettingsError(
                f"num_beams={generation.num_beams}: beam search needs models.engine = 'transformers'; this "
                "model is served by llama.cpp, which decodes one beam (use num_beams 1)"
            )
        chain = self._chain(collection or self.settings.chat.collection, llm, search)
        fallback = language or (self.settings.ui.language if self.settings.ui.language != "auto" else "en")
        inputs = {"question": question, "history": history, "generation": generation, "language": fallback}
        run = _Run(started=time.perf_counter())
        inputs["signals"] = run.signals
        yield from self._run_chain(chain, inputs, stop or threading.Event(), run)
        answer = self._answer(run, llm, question, conversation_id, self.settings.chat.unsure_hesitation)
        if remember:
            self._remember(question, answer, owner)
        yield ChatEvent("done", text=answer.text, sources=answer.sources, answer=answer)

    def _checked(self, question: str) -> str:
        """``question`` stripped; raises when it is empty or over ``chat.max_question_chars``."""
        question = question.strip()
        if not question:
            raise ValueError("the question is empty")
        if len(question) > self.settings.chat.max_question_chars:
            raise QuestionTooLong(
                f"the question is {len(question)} characters long, over the limit of "
                f"{self.settings.chat.max_question_chars} (chat.max_question_chars)"
            )
        return question

    def _history(
        self, conversation_id: str | None, given: list[tuple[str, str]] | None, owner: str | None
    ) -> list[tuple[str, str]]:
        """The last ``chat.history_messages`` turns: the stored conversation's, else the caller's."""
        limit = self.settings.chat.history_messages
        if conversation_id is not None:
            past = self.conversations.messages(conversation_id, owner=owner)  # raises ConversationNotFound
            given = [(m.role, m.content) for m in past]
        return list(given or [])[-limit:] if limit else []

    def _run_chain(
        self, chain: Any, inputs: dict[str, Any], stop: threading.Event, run: _Run
    ) -> Iterator[ChatEvent]:
        """The chain's output as ``sources`` and ``token`` events, recorded in ``run``. Ends the model's work
        when ``stop`` is set, ``chat.answer_timeout`` runs out (AnswerTimeout) or this iterator is closed;
        raises AnswerStopped when the answer ended incomplete."""
        timed_out = threading.Event()
        timer = threading.Timer(self.settings.chat.answer_timeout, lambda: (timed_out.set(), stop.set()))
        timer.daemon = True
        timer.start()
        token = STOP.set(stop)  # seen by the model: LangChain runs each step in a copy of this context
        chunks = chain.stream(inputs)
        try:
            for chunk in chunks:
                if stop.is_set():
                    break
                yield from run.take(chunk)
            interrupted = stop.is_set()
        finally:
            timer.cancel()
            stop.set()  # a no-op after a complete answer; else the model stops at its next token ...
            chunks.close()  # ... and what LangChain still drains from the closed stream ends with it
            with contextlib.suppress(ValueError):  # closed from another context (garbage collection)
                STOP.reset(token)
        if interrupted and timed_out.is_set():
            raise AnswerTimeout(
                f"the answer took longer than {self.settings.chat.answer_timeout:g} s (chat.answer_timeout) "
                "and was stopped"
            )
        if interrupted:
            raise AnswerStopped("the answer was stopped before it was complete")

    @staticmethod
    def _answer(
        run: _Run, llm: ChatBackend, question: str, conversation_id: str | None, unsure_above: float
    ) -> ChatAnswer:
        """The complete answer of ``run``: its sources marked as cited or not, whether it is unsure (the model's
        hesitation above ``unsure_above``), its token counts and timings."""
        text = "".join(run.pieces).strip()
        ended = time.perf_counter()
        shown = run.prompt.hits if run.hits and run.prompt else []
        cited = set(cited_numbers(text))
        n_tokens = llm.count_answer_tokens(text, len(run.pieces))
        first = run.first
        abstained = not shown or is_abstention(text)
        hesitation = run.signals.hesitation if shown else None
        return ChatAnswer(
            text=text,
            sources=[Source.from_hit(i, h, i in cited, text) for i, h in enumerate(shown, 1)],
            conversation_id=conversation_id,
            query=run.query if run.query is not None else question,
            abstained=abstained,
            unsure=not abstained and hesitation is not None and hesitation > unsure_above,
            hesitation=hesitation,
            prompt_tokens=run.prompt.tokens if run.prompt else 0,
            completion_tokens=0 if not shown else n_tokens,
            seconds_to_first_token=(first - run.started) if first else None,
            seconds_generating=(ended - first) if first else None,
            tokens_per_second=(n_tokens - 1) / (ended - first)
            if first and n_tokens > 1 and ended > first
            else None,
        )

    def _remember(self, question: str, answer: ChatAnswer, owner: str | None) -> None:
        """Append the turn to ``answer.conversation_id`` (a new conversation when None) and give ``answer``
        the conversation's and the stored message's ids."""
        answer.conversation_id, answer.message_id = self.conversations.save_turn(
            answer.conversation_id,
            question,
            answer.text,
            [asdict(s) for s in answer.sources],
            owner=owner or "",
            unsure=answer.unsure,
        )

    def answer(self, question: str, **kwargs: Any) -> ChatAnswer:
        """The whole answer at once (``stream`` consumed)."""
        for event in self.stream(question, **kwargs):
            if event.kind == "done":
                assert event.answer is not None
                return event.answer
        raise RuntimeError("the chat stream ended without an answer")


@dataclass
class _Run:
    """What the chain handed out while one answer streamed, and when."""

    started: float
    first: float | None = None  # when the first piece of the answer came
    pieces: list[str] = field(default_factory=list)
    query: str | None = None
    hits: list[Hit] = field(default_factory=list)
    prompt: BuiltPrompt | None = None
    signals: AnswerSignals = field(default_factory=AnswerSignals)  # filled in by the model as the answer ends

    def take(self, chunk: dict[str, Any]) -> Iterator[ChatEvent]:
        """Record ``chunk`` (one of the chain's passthrough keys, or a piece of the answer) and yield the
        event it makes: the numbered sources once the prompt is built, a token for each piece."""
        if "prompt" in chunk:
            self.prompt = chunk["prompt"]
            shown = chunk["prompt"].hits
            yield ChatEvent("sources", sources=[Source.from_hit(i, h, False) for i, h in enumerate(shown, 1)])
        if "query" in chunk:
            self.query = chunk["query"]
        if "hits" in chunk:
            self.hits = chunk["hits"]
        if piece := chunk.get("answer"):
            self.first = self.first or time.perf_counter()
            self.pieces.append(piece)
            yield ChatEvent("token", text=piece)
