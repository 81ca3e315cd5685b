"""The retrieval-augmented chat chain, as LangChain runnables.

    {question, history, generation[, signals]}
      → query   : the follow-up condensed into a standalone search query
      → hits    : search(query); none when even the best hit is below the relevance threshold, or the
                  hits hold too few of the query's words (see speaks_of)
      → prompt  : system prompt + history + numbered sources + question, fitted to the context window
      → answer  : the LLM's streamed answer with invalid citation markers removed (a quoted path's
                  first letter as its source has it, and a quoted command's citation out of its code),
                  or an abstention in the question's language when nothing relevant was found

``signals`` (a :class:`chatbot.chat_model.AnswerSignals`) is handed to the model call, which fills it in as
the answer ends (the model's hesitation to answer).

``chain.stream(inputs)`` yields dicts: first the passthrough keys (query, hits, prompt) as each step finishes,
then ``{"answer": piece}`` for every streamed piece of the answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import Runnable, RunnableGenerator, RunnableLambda, RunnablePassthrough

from chatbot.answer_format import code_quote_stream, held_until, layout_stream
from chatbot.citations import MarkerFilter
from chatbot.language import detect_language
from chatbot.prompt import ABSTAIN, CONDENSE_PROMPT, SYSTEM_PROMPT, PromptTooLong, build_prompt, defuse
from chatbot.settings import ChatSettings, GenerationSettings
from retrieval.types import Hit
from retrieval.words import word_coverage

Search = Callable[[str, int], list[Hit]]
CountTokens = Callable[[list[BaseMessage]], int]

CONDENSE_TOKENS = 48  # a rewritten question is one sentence


def condense_query(
    question: str, history: list[tuple[str, str]], mode: str, llm: BaseChatModel | None = None
) -> str:
    """A standalone search query for ``question`` given the conversation so far.

    ``concat`` prepends the previous user question (robust with small models: BM25 and the embedding both see
    the subject the follow-up refers to); ``llm`` asks the model to rewrite it; ``off`` uses the question as is.
    """
    previous = [content for role, content in history if role == "user"]
    if not previous or mode == "off":
        return question
    if mode == "concat" or llm is None:
        return f"{previous[-1]} {question}"
    transcript = "\n".join(f"{role}: {content}" for role, content in history[-6:])
    rewrite = llm.bind(generation=GenerationSettings(max_new_tokens=CONDENSE_TOKENS, repetition_penalty=1.0))
    text = str(
        rewrite.invoke([HumanMessage(CONDENSE_PROMPT.format(history=transcript, question=question))]).content
    )
    text = text.strip().splitlines()[0].strip() if text.strip() else ""
    return text if 3 <= len(text) <= 4 * len(question) + 200 else f"{previous[-1]} {question}"


def same_language_first(question: str, hits: Sequence[Hit], k: int, floor: float = 0.5) -> list[Hit]:
    """The first ``k`` of ``hits`` (best first), those in the question's language put before the others among
    the hits that score at least ``floor`` times the best: on a collection holding a page and its translation,
    "Which file formats can I index?" is answered from the English page, "¿Qué formatos puedo indexar?" from
    the Spanish one, though keyword search matches "formats" and "formatos" by their common stem. A weak hit is
    never put above a strong one for its language alone, and a question or passage whose language cannot be
    told (:func:`chatbot.language.detect_language`) counts as the same language."""
    language = detect_language(question, "")
    if not language or not hits:
        return list(hits[:k])
    best = max(h.score for h in hits)
    near = [h for h in hits if h.score >= floor * best]
    rest = [h for h in hits if h.score < floor * best]
    near.sort(key=lambda h: detect_language(h.text, language) != language)  # stable: best first within each
    return (near + rest)[:k]


def relevance(hit: Hit) -> float:
    """Absolute relevance of a hit: its dense cosine similarity when the search reports one, else its score."""
    return float(hit.metadata.get("dense", hit.score))


def gate_signals(query: str, hits: Sequence[Hit]) -> tuple[float, float]:
    """What the relevance gate judges ``hits`` on: the best hit's relevance, and the share of ``query``'s
    content words the hits hold."""
    if not hits:
        return 0.0, 0.0
    return max(relevance(h) for h in hits), word_coverage(query, [h.text for h in hits])


def speaks_of(query: str, hits: Sequence[Hit], chat: ChatSettings) -> bool:
    """Whether ``hits`` are worth answering ``query`` from (see :func:`passes_gate`)."""
    return bool(hits) and passes_gate(*gate_signals(query, hits), chat)


def passes_gate(best: float, coverage: float, chat: ChatSettings) -> bool:
    """The relevance gate on its two signals: the best hit is similar enough (``chat.min_relevance``), and the
    hits hold enough of the question's words (``chat.min_word_coverage``) unless the best one is very similar
    (``chat.sure_relevance``)."""
    if best < chat.min_relevance:
        return False
    return best >= chat.sure_relevance or coverage >= chat.min_word_coverage


_CODE = re.compile(r"[/\\_=`]|\.\w")  # a path, a file name, an identifier, code


def source_case(text: str, sources: Sequence[str]) -> str:
    """``text`` with the first letter an answer should have: a capital (``no [1].`` → ``No [1].``: a quote
    from mid-sentence starts in lower case), except when the answer starts with a path, a file name or code
    quoted from a source, which keeps the case the source gives it (``Var/conversations.sqlite [1].`` →
    ``var/conversations.sqlite [1].``; ``make run [1].`` stays, the source writes `` `make run` ``)."""
    lead = len(text) - len(text.lstrip())
    word = text[lead:].split(maxsplit=1)[0].rstrip(".,;:!?)]") if text.strip() else ""
    if word[:1].islower():
        # a name written that way (iPhone, reStructuredText), a path or code: left as it is
        if word[1:] != word[1:].lower() or _CODE.search(word) or any(f"`{word}" in s for s in sources):
            return text
        return text[:lead] + word[:1].upper() + text[lead + 1 :]
    if not word[:1].isupper() or any(word in source for source in sources):
        return text
    lower = word[:1].lower() + word[1:]
    if any(_CODE.search(lower) or f"`{lower}" in source for source in sources if lower in source):
        return text[:lead] + lower[:1] + text[lead + 1 :]
    return text


def _code_quote(sources: Sequence[str]) -> RunnableGenerator:
    """:func:`chatbot.answer_format.code_quote_stream` as a runnable."""

    def transform(pieces: Iterator[str]) -> Iterator[str]:
        yield from code_quote_stream(pieces, sources)

    return RunnableGenerator(transform)


def _source_case(sources: Sequence[str]) -> RunnableGenerator:
    """Streaming :func:`source_case`: the answer's first word is held back until it is complete."""

    def transform(pieces: Iterator[str]) -> Iterator[str]:
        yield from held_until(
            pieces, lambda held: re.search(r"\S\s", held) is not None, lambda held: source_case(held, sources)
        )

    return RunnableGenerator(transform)


def _code_layout() -> RunnableGenerator:
    """:func:`chatbot.answer_format.layout_stream` as a runnable."""
    return RunnableGenerator(layout_stream)


def _filter_markers(n_sources: int) -> RunnableGenerator:
    def transform(pieces: Iterator[str]) -> Iterator[str]:
        markers = MarkerFilter(n_sources)
        for piece in pieces:
            if out := markers.feed(piece):
                yield out
        if tail := markers.flush():
            yield tail

    return RunnableGenerator(transform)


def relevant_hits(question: str, query: str, search: Search, chat: ChatSettings) -> list[Hit]:
    """The passages to answer ``question`` from, searched with ``query`` (its condensed form): the best
    ``chat.top_k`` (those in the question's language first, see :func:`same_language_first`), or none when they
    do not speak of the query (:func:`speaks_of`)."""
    if chat.same_language_first:
        found = same_language_first(question, search(query, 2 * chat.top_k), chat.top_k)
    else:
        found = search(query, chat.top_k)
    # Fused scores are relative (the best hit is always near 1), so relevance is judged on absolute signals:
    # the best hit's cosine similarity to the query, and the query's words in the hits.
    return found if speaks_of(query, found, chat) else []


def build_chain(
    llm: BaseChatModel,
    search: Search,
    count_tokens: CountTokens,
    context_limit: int,
    chat: ChatSettings,
) -> Runnable[dict[str, Any], dict[str, Any]]:
    """The chain for one backend and one collection. ``context_limit`` is the model's window in tokens."""

    def condense(x: dict[str, Any]) -> str:
        return condense_query(x["question"], x.get("history", []), chat.condense, llm)

    def retrieve(x: dict[str, Any]) -> list[Hit]:
        return relevant_hits(x["question"], x["query"], search, chat)

    def prompt(x: dict[str, Any]) -> Any:
        gen: GenerationSettings = x["generation"]
        try:
            return build_prompt(
                x["question"],
                x["hits"],
                x.get("history", []),
                count_tokens,
                limit=context_limit - gen.max_new_tokens,
                system_prompt=chat.system_prompt or SYSTEM_PROMPT,
            )
        except PromptTooLong as exc:
            if gen.max_new_tokens < context_limit // 2:
                raise
            # the room asked for the answer is what leaves too little: say so, by the name a client sends
            raise PromptTooLong(
                f"{exc}, or ask for fewer answer tokens: max_new_tokens={gen.max_new_tokens} (a request's "
                f"max_tokens) takes that much of the model's {context_limit}-token context window"
            ) from exc

    def answer(x: dict[str, Any]) -> Runnable | str:
        if not x["hits"] or not x["prompt"].hits:  # nothing relevant, or no room left for a source
            return ABSTAIN[detect_language(x["question"], x.get("language") or "en")]
        built = x["prompt"]
        # the sources as shown and the question, for a local model's quoting rule and drafts (generation.extractive,
        # generation.drafts)
        shown = [defuse(h.text.strip()) for h in built.hits]
        return (
            RunnableLambda(lambda _: built.messages)
            | llm.bind(
                generation=x["generation"], sources=shown, question=x["question"], signals=x.get("signals")
            )
            | StrOutputParser()
            | _filter_markers(len(built.hits))
            | _code_layout()
            # the sources unstripped here: a first line's indent says it is code
            | _code_quote([defuse(h.text) for h in built.hits])
            | _source_case(shown)
        )

    return (
        RunnablePassthrough.assign(query=RunnableLambda(condense))
        | RunnablePassthrough.assign(hits=RunnableLambda(retrieve))
        | RunnablePassthrough.assign(prompt=RunnableLambda(prompt))
        | RunnablePassthrough.assign(answer=RunnableLambda(answer))
    )
