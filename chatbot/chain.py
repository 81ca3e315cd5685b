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
import textwrap
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import Runnable, RunnableGenerator, RunnableLambda, RunnablePassthrough

from chatbot.citations import MarkerFilter
from chatbot.language import detect_language
from chatbot.prompt import ABSTAIN, CONDENSE_PROMPT, SYSTEM_PROMPT, build_prompt, defuse
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


def code_quote(text: str, sources: Sequence[str]) -> str:
    """``text`` with its quote as a code span when the quote is code in its source (a code span, or a line of
    an indented or fenced block), as the source writes it: ``chatbot index mi-coleccion /ruta [1].`` →
    ``` ``chatbot index mi-coleccion /ruta`` [1].```. A command shown as prose would get a capital (and a reader
    would copy ``Chatbot``). The cited source is looked in; without a citation, every source."""
    quote, bracket, rest = text.partition("[")
    words = quote.split()
    if not words or "`" in quote or "\n" in quote.strip():
        return text
    cited = re.match(r"\d+", rest)
    number = int(cited.group()) if bracket and cited else 0
    looked = [sources[number - 1]] if 1 <= number <= len(sources) else list(sources)
    phrase = r"\s+".join(map(re.escape, words))
    pattern, spanned = re.compile(phrase, re.IGNORECASE), re.compile(f"`({phrase})`", re.IGNORECASE)
    for source in looked:
        found = spanned.search(source) or next(filter(None, map(pattern.search, code_lines(source))), None)
        if found:
            lead = text[: len(text) - len(text.lstrip())]
            code = found.group(found.lastindex or 0)
            return lead + inline_code(code) + (" " + bracket + rest if bracket else "")
    return text


def code_lines(text: str) -> list[str]:
    """The lines of ``text`` that Markdown shows as code: inside a ``` fence, or indented by four spaces or a tab
    after a blank line (or another such line)."""
    lines, fenced, indented, blank = [], False, False, True
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced:
            lines.append(line)
        elif line.strip() and (line.startswith(("    ", "\t"))) and (blank or indented):
            lines.append(line)
            indented = True
        elif line.strip():
            indented = False
        blank = not line.strip()
    return lines


def _code_quote(sources: Sequence[str]) -> RunnableGenerator:
    """Streaming :func:`code_quote`: the answer is held back only while it could still be a quote of code (it
    is part of a code span or a code line of a source), until its citation starts."""
    code = [
        " ".join(c.lower().split())
        for source in sources
        for c in [*re.findall(r"`([^`]+)`", source), *code_lines(source)]
    ]

    def transform(pieces: Iterator[str]) -> Iterator[str]:
        held, done = "", False
        for piece in pieces:
            if done:
                yield piece
                continue
            held += piece
            quote = " ".join(held.split("[", 1)[0].lower().split())
            if "[" in held or (quote and not any(quote in c for c in code)):
                yield code_quote(held, sources)
                done = True
        if held and not done:
            yield code_quote(held, sources)

    return RunnableGenerator(transform)


def _source_case(sources: Sequence[str]) -> RunnableGenerator:
    """Streaming :func:`source_case`: the answer's first word is held back until it is complete."""

    def transform(pieces: Iterator[str]) -> Iterator[str]:
        held, done = "", False
        for piece in pieces:
            if done:
                yield piece
                continue
            held += piece
            if re.search(r"\S\s", held):
                yield source_case(held, sources)
                done = True
        if held and not done:
            yield source_case(held, sources)

    return RunnableGenerator(transform)


# where an answer's quote enters a code block: a line indented by four spaces or a tab, or a ``` fence
_CODE_START = re.compile(r"(?:^|\n)(?:[ \t]*\n)*(?: {4}|\t|```)")
_MAY_OPEN_CODE = re.compile(r"(?:(?:^|\n)[ \t]*)*(?:^|\n)[ \t`]{0,3}$")
_CITATIONS_AT_END = re.compile(r"(?:\s*\[\d+(?:\s*,\s*\d+)*\])+\.?\s*$")


def code_layout(text: str) -> str:
    """``text`` with its citation out of the code it quotes: an answer that quotes a command from a code block
    ends inside that block (``Run:\\n\\n    chatbot index NAME DIR [3].``), where Markdown shows the
    citation as part of the command, and a reader who copies it runs ``[3].`` too. One line of code
    becomes a code span (``Run: `chatbot index NAME DIR` [3].``); longer code a fenced block, with the
    citation after it."""
    start = _CODE_START.search(text)
    if start is None:
        return reflow(text)
    prose = reflow(text[: start.start()].rstrip())
    gap, code = _code_part(text[start.start() :])
    return prose + gap + code if prose else code


# a line break inside a paragraph: after a word, before a word (not a list item, a heading, a quote, a table row,
# code or a number)
_SOFT_BREAK = re.compile(r"(?<=\S)\n(?=[^\s\-*+#>|`\d])")


def reflow(text: str) -> str:
    """``text`` with the line breaks inside its paragraphs as spaces: a quote keeps its source's line breaks
    ("Markdown,\\nreStructuredText"), which Markdown shows as spaces but a terminal or an API client does not.
    Lists, headings and paragraph breaks stay. Each break becomes one space, so the length is kept."""
    return _SOFT_BREAK.sub(" ", text)


def _code_part(rest: str) -> tuple[str, str]:
    """The code an answer ends with (``rest``, from where the code starts) laid out with its citation after
    it, and what goes between it and the words before it."""
    tail = _CITATIONS_AT_END.search(rest)
    cited = tail.group().strip() if tail else ""
    body = rest[: tail.start()] if tail else rest
    lines = [line for line in body.split("\n") if not line.lstrip().startswith("```")]
    code = textwrap.dedent("\n".join(lines)).strip("\n")
    if not code.strip():
        return " ", cited
    if "\n" not in code:
        return " ", " ".join(filter(None, [inline_code(code.strip()), cited]))
    fence = "`" * max(3, _longest_run(code, "`") + 1)
    return "\n\n", "\n\n".join(filter(None, [f"{fence}\n{code}\n{fence}", cited]))


def inline_code(text: str) -> str:
    """``text`` as a Markdown code span that no backtick in it closes early."""
    fence = "`" * (_longest_run(text, "`") + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _longest_run(text: str, char: str) -> int:
    return max((len(run) for run in re.findall(f"{re.escape(char)}+", text)), default=0)


def _code_layout() -> RunnableGenerator:
    """Streaming :func:`code_layout` (and :func:`reflow`): the answer streams until a code block starts (line
    breaks at the end are held back until the next line shows whether it is code, or a paragraph); from there
    it is held to the end. Drafted answers come whole anyway, and code comes last in an answer that quotes a
    command."""

    def transform(pieces: Iterator[str]) -> Iterator[str]:
        held, coding, last = "", False, ""

        def prose(text: str) -> str:  # reflowed with the character before it, which decides a break
            nonlocal last
            out = reflow(last + text)[len(last) :]
            last = text[-1:] or last
            return out

        for piece in pieces:
            held += piece
            if coding:
                continue
            start = _CODE_START.search(held)
            if start is not None:
                coding = True
                if held[: start.start()].strip():
                    yield prose(held[: start.start()].rstrip())
                held = held[start.start() :]
                continue
            # the end may still open a code block (a line break, then up to three blanks or backticks so
            # far): hold it back until the next line shows
            cut = _MAY_OPEN_CODE.search(held)
            if cut is None or cut.start():
                yield prose(held[: cut.start() if cut else len(held)])
                held = held[cut.start() :] if cut else ""
        if held:
            if coding:
                gap, code = _code_part(held)
                yield (gap if last else "") + code
            else:
                yield prose(held)

    return RunnableGenerator(transform)


def _filter_markers(n_sources: int) -> RunnableGenerator:
    def transform(pieces: Iterator[str]) -> Iterator[str]:
        markers = MarkerFilter(n_sources)
        for piece in pieces:
            if out := markers.feed(piece):
                yield out
        if tail := markers.flush():
            yield tail

    return RunnableGenerator(transform)


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
        found = search(x["query"], chat.top_k)
        # Fused scores are relative (the best hit is always near 1), so relevance is judged on absolute
        # signals: the best hit's cosine similarity to the query, and the query's words in the hits.
        return found if speaks_of(x["query"], found, chat) else []

    def prompt(x: dict[str, Any]) -> Any:
        gen: GenerationSettings = x["generation"]
        return build_prompt(
            x["question"],
            x["hits"],
            x.get("history", []),
            count_tokens,
            limit=context_limit - gen.max_new_tokens,
            system_prompt=chat.system_prompt or SYSTEM_PROMPT,
        )

    def answer(x: dict[str, Any]) -> Runnable | str:
        if not x["hits"] or not x["prompt"].hits:  # nothing relevant, or no room left for a source
            return ABSTAIN[detect_language(x["question"])]
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
            | _code_quote(shown)
            | _source_case(shown)
        )

    return (
        RunnablePassthrough.assign(query=RunnableLambda(condense))
        | RunnablePassthrough.assign(hits=RunnableLambda(retrieve))
        | RunnablePassthrough.assign(prompt=RunnableLambda(prompt))
        | RunnablePassthrough.assign(answer=RunnableLambda(answer))
    )
