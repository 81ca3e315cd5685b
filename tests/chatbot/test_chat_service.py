"""The chat service end to end on tiny models and a real collection (FAISS + SQLite)."""

from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

from chatbot.answer_format import code_layout, code_quote, code_quote_stream, layout_stream
from chatbot.chain import source_case
from chatbot.memory import ConversationNotFound
from chatbot.service import AnswerTimeout, ChatService, CollectionNotFound, QuestionTooLong
from retrieval.collection import Collection

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"


@pytest.fixture
def indexed(settings):
    Collection.open(settings, "sample").sync(SAMPLE)
    return settings


def scripted(*answers: str) -> GenericFakeChatModel:
    """A chat model that streams the given answers word by word (to test what the chain does with output)."""
    return GenericFakeChatModel(messages=iter(answers))


def test_stream_events_and_persisted_conversation(indexed):
    service = ChatService(indexed)
    events = list(service.stream("How do I delete a collection?"))
    kinds = [e.kind for e in events]
    assert kinds[0] == "sources" and kinds[-1] == "done" and "token" in kinds
    answer = events[-1].answer
    assert answer.text == "".join(e.text for e in events if e.kind == "token").strip()
    assert answer.sources and all(s.source.endswith(".md") for s in answer.sources)
    assert [s.number for s in answer.sources] == list(range(1, len(answer.sources) + 1))
    # the turn is stored: a new service (as after a restart) sees it
    again = ChatService(indexed)
    stored = again.conversations.messages(answer.conversation_id)
    assert [m.role for m in stored] == ["user", "assistant"]
    assert stored[1].id == answer.message_id and stored[1].content == answer.text


def with_unsure_at(settings, hesitation: float):
    return settings.model_copy(
        update={"chat": settings.chat.model_copy(update={"unsure_hesitation": hesitation})}
    )


def test_an_answer_the_model_nearly_declined_is_marked_unsure_and_stored(indexed):
    question = "How do I delete a collection?"
    plain = ChatService(indexed).answer(question)
    assert not plain.abstained and plain.hesitation is not None
    close = ChatService(with_unsure_at(indexed, plain.hesitation - 0.5))
    marked = close.answer(question)
    assert marked.unsure and marked.text == plain.text
    assert marked.hesitation == pytest.approx(plain.hesitation, abs=1e-4)
    # stored with the answer, so the conversation shows the mark again after a restart
    stored = ChatService(indexed).conversations.messages(marked.conversation_id)
    assert [m.unsure for m in stored] == [False, True]
    assert not ChatService(with_unsure_at(indexed, plain.hesitation + 0.5)).answer(question).unsure
    # an endpoint that reports no logits never marks an answer
    scripted_answer = ChatService(with_unsure_at(indexed, -50), llm=scripted("Run it [1].")).answer(question)
    assert scripted_answer.hesitation is None and not scripted_answer.unsure


def test_invalid_citations_removed_and_cited_sources_marked(indexed):
    service = ChatService(indexed, llm=scripted("Run the delete command [1] [9] as shown [2][7]."))
    answer = service.answer("How do I delete a collection?")
    assert answer.text == "Run the delete command [1] as shown [2]."
    cited = {s.number for s in answer.sources if s.cited}
    assert cited == {1, 2}


def test_cited_sources_say_where_they_hold_the_quote_and_keep_it(indexed):
    """An answer that quotes a source (as generation.extractive makes the local model do) comes back with the
    quote's offsets in that source, through the API's fields and the stored conversation; a source not cited,
    or a quote no source holds, has none."""
    question = "How do I delete a collection?"
    shown = ChatService(indexed, llm=scripted("x")).answer(question).sources
    words = shown[0].text.split()[2:9]
    quoted = " ".join(words)
    answer = ChatService(
        indexed, llm=scripted(f"{quoted[0].upper()}{quoted[1:]} [1] and more words [2].")
    ).answer(question)
    first, second = answer.sources[0], answer.sources[1]
    assert first.cited and " ".join(first.text[first.quote[0] : first.quote[1]].split()) == quoted
    assert second.cited and second.quote is None  # "and more words" is not a quote of source 2
    assert all(s.quote is None for s in answer.sources if not s.cited)
    stored = ChatService(indexed).conversations.messages(answer.conversation_id)[1]
    assert (
        stored.sources[0]["quote"] == first.quote and answer.to_dict()["sources"][0]["quote"] == first.quote
    )


def test_a_quoted_path_keeps_the_sources_spelling(indexed):
    """Answers start with a capital letter; a path or command quoted from a source keeps its own case, and its
    code span, in the streamed tokens as in the stored answer. An ordinary first word keeps its capital."""
    service = ChatService(
        indexed, llm=scripted("Var/conversations.sqlite [1].", "Conversations are kept [1].")
    )
    events = list(service.stream("Where are conversations stored?"))
    assert "".join(e.text for e in events if e.kind == "token").strip() == "`var/conversations.sqlite` [1]."
    assert events[-1].answer.text == "`var/conversations.sqlite` [1]."
    assert service.answer("Where are conversations stored?").text == "Conversations are kept [1]."


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Var/conversations.sqlite [1].", "var/conversations.sqlite [1]."),
        ("Chatbot collections delete NAME [2].", "chatbot collections delete NAME [2]."),  # in backticks
        ("Settings.yaml.", "settings.yaml."),
        ("Museums close [1].", "Museums close [1]."),  # a plain word
        ("Los Denver Broncos [2].", "Los Denver Broncos [2]."),
        ("Var/other.sqlite [1].", "Var/other.sqlite [1]."),  # no source spells it
        # a quote from mid-sentence gets its capital; code, paths and names keep their case
        ("no [1].", "No [1]."),
        ("museums close at six [2].", "Museums close at six [2]."),
        ("chatbot collections delete NAME [2].", "chatbot collections delete NAME [2]."),  # in backticks
        ("var/conversations.sqlite [1].", "var/conversations.sqlite [1]."),
        ("`var/conversations.sqlite` [1].", "`var/conversations.sqlite` [1]."),
        ("reStructuredText and HTML [1].", "reStructuredText and HTML [1]."),
        ("  plain text [1].", "  Plain text [1]."),
        ("", ""),
    ],
)
def test_source_case(text, expected):
    sources = [
        "Conversations are in `var/conversations.sqlite`. Edit settings.yaml to change it.",
        "Run `chatbot collections delete NAME`. los Denver Broncos. The museums close at six.",
    ]
    assert source_case(text, sources) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a command quoted from an indented block: a code span, the citation after it
        (
            "Run:\n\n    chatbot index my-collection /path/to/folder [3].",
            "Run: `chatbot index my-collection /path/to/folder` [3].",
        ),
        ("    make run [2].", "`make run` [2]."),
        ("Run:\n\n```bash\nchatbot index a b\n``` [2].", "Run: `chatbot index a b` [2]."),
        ("Run:\n\n```bash\nchatbot index a b [2].", "Run: `chatbot index a b` [2]."),  # fence never closed
        (
            "Steps:\n\n    make install\n    make run [1].",
            "Steps:\n\n```\nmake install\nmake run\n```\n\n[1].",
        ),
        ("Run:\n\n    echo `x` [1][2]", "Run: `` echo `x` `` [1][2]"),  # a backtick in the code
        # no code: as written, but for the line breaks inside a paragraph
        ("Plain text, Markdown,\nreStructuredText [1].", "Plain text, Markdown, reStructuredText [1]."),
        (
            "Steps:\n- one\n- two\n\nThen three\n# Four\n2. five [1].",
            "Steps:\n- one\n- two\n\nThen three\n# Four\n2. five [1].",
        ),
        ("Run:\nfirst this,\nthen\n\n    make run [1].", "Run: first this, then `make run` [1]."),
        ("Run `make run` [1].", "Run `make run` [1]."),
        ("A list:\n\n  - one [1].", "A list:\n\n  - one [1]."),
        # words after the code, or a citation inside its line: after the code span
        (
            "Run:\n\n    chatbot serve\n\nand open the browser [1].",
            "Run: `chatbot serve` and open the browser [1].",
        ),
        ("Run:\n\n    chatbot serve [3] and open it.", "Run: `chatbot serve` [3] and open it."),
        # not code: a triple-backtick span inside a line, an indented line without a blank line before it
        # (or only blanks), a list item's own paragraph, a tab inside a line
        ("```make run``` [1].", "```make run``` [1]."),
        ("Run:\n```make run``` [1].", "Run:\n```make run``` [1]."),  # a line that opens with ``` is no prose
        ("Run:\n`make run` now [1].", "Run: `make run` now [1]."),  # one that opens with a code span is
        (
            "The museum opens at nine.\n    \nIt closes at six [1].",
            "The museum opens at nine.\n    \nIt closes at six [1].",
        ),
        (
            "1. Install:\n    - pip install foo\n2. Run it [1].",
            "1. Install:\n    - pip install foo\n2. Run it [1].",
        ),
        ("1. Open the page.\n\n    Choose the model [1].", "1. Open the page.\n\n    Choose the model [1]."),
        ("Use\ttabs [1].", "Use\ttabs [1]."),
        # a citation before a blank line and more words; a second block; after a heading; a list after the code
        (
            "Run:\n\n    make run [1].\n\nThen open the browser [2].",
            "Run: `make run` [1]. Then open the browser [2].",
        ),
        ("Run:\n\n    make run\n\nThen:\n\n    make test [1].", "Run: `make run` Then: `make test` [1]."),
        ("## Install\n\n    pip install foo [1].", "## Install\n\n`pip install foo` [1]."),
        ("- item\ncontinued\n\n    make run [1].", "- item continued `make run` [1]."),
        (
            "1. Install:\n   ```bash\n   pip install foo\n   ```\n2. Run it [1].",
            "1. Install:\n\n`pip install foo`\n2. Run it [1].",
        ),
        # fences of every kind: a space before the language, tildes, a longer closing fence; a language kept
        ("Run:\n\n``` bash\nmake run\n``` [1].", "Run: `make run` [1]."),
        ("Run:\n\n~~~bash\nmake run\n~~~ [1].", "Run: `make run` [1]."),
        ("Run:\n\n```\nx\n````\n[1].", "Run: `x` [1]."),
        ("Set:\n\n```yaml\na: 1\nb: 2\n``` [1].", "Set:\n\n```yaml\na: 1\nb: 2\n```\n\n[1]."),
        # brackets in code are no citation; CRLF line ends
        ("Run:\n\n    arr[1] = 2 [1].", "Run: `arr[1] = 2` [1]."),
        ("Plain,\r\nText [1].", "Plain, Text [1]."),
        # headings, underlines and bullets keep their lines
        ("# Setup\nRun the installer [1].", "# Setup\nRun the installer [1]."),
        ("Install\n=======\nRun it [1].", "Install\n=======\nRun it [1]."),
        ("Options:\n• fast\n• slow [1].", "Options:\n• fast\n• slow [1]."),
    ],
)
def test_code_layout_keeps_the_citation_out_of_the_command(text, expected):
    assert code_layout(text) == expected
    for size in (1, 2, 3, 5, 64):  # streamed in pieces of any size: the same text
        pieces = [text[i : i + size] for i in range(0, len(text), size)]
        assert "".join(layout_stream(iter(pieces))) == expected, size
    pieces = ["Run ", "```", "make run", "```", " [1]."] if text.startswith("```make") else []
    assert "".join(layout_stream(iter(pieces))) == "".join(pieces)  # a fence never ends a line's text


GUIDE = (
    "## Adding documents\n\nTo index a folder, run:\n\n    chatbot index my-collection /path/to/folder\n\n"
    'Start the app with `make run`. Then run:\n\n```bash\nchatbot ask "Which formats?"\n```\n'
    "    (an indented line after prose is no code)"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a line of an indented block, of a fence, a code span: code, in the source's case
        (
            "Chatbot index my-collection /path/to/folder [1].",
            "`chatbot index my-collection /path/to/folder` [1].",
        ),
        ("chatbot index my-collection [1].", "`chatbot index my-collection` [1]."),
        ("make run [1].", "`make run` [1]."),
        ("chatbot ask [1].", "`chatbot ask` [1]."),
        ("chatbot index my-collection", "`chatbot index my-collection`"),  # no citation
        # prose, or not code in the cited source: as written
        ("To index a folder [1].", "To index a folder [1]."),
        ("an indented line after prose [1].", "an indented line after prose [1]."),
        ("make run [2].", "make run [2]."),
        ("`make run` [1].", "`make run` [1]."),
        # a single plain word inside a code line is no code ("no" of "--no-save", "install" of "npm install")
        ("No [3].", "No [3]."),
        ("Install [3].", "Install [3]."),
        ("node-gyp [3].", "`node-gyp` [3]."),
        # prose after a closing fence (a passage that starts inside a fence), a list item's indented text
        ("The server listens on port 8000 [4].", "The server listens on port 8000 [4]."),
        ("cat config.yaml [4].", "`cat config.yaml` [4]."),
        ("Choose the model and save [5].", "Choose the model and save [5]."),
        # an indented paragraph of a plain-text file, a comment in a code block: words, not code
        ("The museum opens at nine [6].", "The museum opens at nine [6]."),
        ("install the dependencies first [7].", "install the dependencies first [7]."),
        ("pip install foo [7].", "`pip install foo` [7]."),
    ],
)
def test_a_quote_of_code_is_shown_as_code(text, expected):
    sources = [
        GUIDE,
        "Run make run.",
        "Install the tool:\n\n    npm install node-gyp --no-save",
        "cat config.yaml\n```\n\nThe server listens on port 8000",
        "1. Open the settings.\n\n    Choose the model and save",
        "NOTICE\n\n    The museum opens at nine, and closes at six.",
        "```bash\n# install the dependencies first\npip install foo\n```",
    ]
    assert code_quote(text, sources) == expected
    pieces = [text[i : i + 3] for i in range(0, len(text), 3)]
    assert "".join(code_quote_stream(iter(pieces), sources)) == expected


def test_a_quoted_command_is_answered_as_a_code_span(indexed):
    service = ChatService(
        indexed, llm=scripted("Run:\n\n    chatbot index my-collection /path/to/folder [1].")
    )
    events = list(service.stream("How do I reindex a collection?"))
    answer = events[-1].answer
    assert answer.text == "Run: `chatbot index my-collection /path/to/folder` [1]."
    assert "".join(e.text for e in events if e.kind == "token").strip() == answer.text
    assert service.conversations.messages(answer.conversation_id)[-1].content == answer.text


def test_follow_up_uses_the_conversation(indexed):
    service = ChatService(indexed, llm=scripted("first answer", "second answer"))
    first = service.answer("How do I delete a collection?")
    second = service.answer("and is the folder on disk touched?", conversation_id=first.conversation_id)
    # concat condensing: the search query carries the subject of the earlier question
    assert "delete a collection" in second.query
    assert len(service.conversations.messages(first.conversation_id)) == 4


def test_abstains_in_the_language_of_the_question(indexed):
    strict = indexed.model_copy(update={"chat": indexed.chat.model_copy(update={"min_relevance": 1e9})})
    service = ChatService(strict, llm=scripted("should not be used"))
    en = service.answer("What is the capital of Australia?")
    es = service.answer("¿Quién ganó el mundial de 2010?")
    assert en.abstained and "can't find" in en.text and en.sources == []
    assert es.abstained and "No encuentro" in es.text


def test_questions_whose_words_the_collection_lacks_are_declined_before_the_model(indexed):
    # the word check alone decides here: every passage passes the similarity floor, none is similar enough to
    # skip the check
    chat = indexed.chat.model_copy(update={"min_relevance": -1.0, "sure_relevance": 2.0})
    service = ChatService(indexed.model_copy(update={"chat": chat}), llm=scripted("Run it [1].", "Nope [1]."))
    off = service.answer("¿Quién pintó Las Meninas?")
    assert off.abstained and off.text.startswith("No encuentro") and off.sources == []
    on = service.answer("How do I delete a collection?")
    assert not on.abstained and on.text == "Run it [1]." and on.sources
    # 0 turns the check off: the same question reaches the model
    lax = indexed.model_copy(update={"chat": chat.model_copy(update={"min_word_coverage": 0.0})})
    assert ChatService(lax, llm=scripted("Nope [1].")).answer("¿Quién pintó Las Meninas?").text == "Nope [1]."


def test_unknown_collection_and_conversation_are_clear_errors(indexed):
    service = ChatService(indexed, llm=scripted("x"))
    with pytest.raises(CollectionNotFound, match="chatbot index nope"):
        service.answer("hello", collection="nope")
    with pytest.raises(ConversationNotFound):
        service.answer("hello", conversation_id="missing")
    with pytest.raises(ValueError, match="empty"):
        service.answer("   ")


def test_a_failed_first_answer_leaves_no_conversation(indexed):
    service = ChatService(indexed, llm=scripted())  # no answer to give: the model fails mid-stream
    with pytest.raises(Exception):  # noqa: B017 - whatever the model raises
        service.answer("How do I delete a collection?", owner="alice")
    assert service.conversations.list() == []
    ok = ChatService(indexed, llm=scripted("Use the delete command [1]."))
    answer = ok.answer("How do I delete a collection?", owner="alice")
    assert [c.id for c in ok.conversations.list(owner="alice")] == [answer.conversation_id]


def test_a_conversation_is_continued_only_by_its_owner(indexed):
    service = ChatService(indexed, llm=scripted("one", "two", "three"))
    conv = service.answer("How do I delete a collection?", owner="alice").conversation_id
    with pytest.raises(ConversationNotFound):
        service.answer("and then?", conversation_id=conv, owner="bob")
    assert service.answer("and then?", conversation_id=conv, owner="alice").conversation_id == conv
    assert len(service.conversations.messages(conv)) == 4  # bob's attempt stored nothing


def test_overlong_question_is_refused_before_any_work(indexed):
    service = ChatService(indexed, llm=scripted("never"))
    with pytest.raises(QuestionTooLong, match="chat.max_question_chars"):
        service.answer("why " * 2000)
    assert service.conversations.list() == []


def test_answer_timeout_stops_generation_and_frees_the_model(indexed, long_llm_dir):
    import time

    settings = indexed.model_copy(
        update={
            # transformers: the engine writes the 6,000 tokens of the tiny model in about a second (its own
            # stop is tested in test_engine.py)
            "models": indexed.models.model_copy(
                update={"generator": str(long_llm_dir), "engine": "transformers"}
            ),
            "chat": indexed.chat.model_copy(
                update={"answer_timeout": 1.0, "min_relevance": -1.0, "min_word_coverage": 0.0}
            ),
            "generation": indexed.generation.model_copy(update={"max_new_tokens": 6000}),
        }
    )
    service = ChatService(settings)
    assert service.llm is not None  # loaded before the clock starts
    started = time.perf_counter()
    with pytest.raises(AnswerTimeout, match="chat.answer_timeout"):
        service.answer("How do I delete a collection?")
    assert time.perf_counter() - started < 5  # 6,000 tokens would take ~20 s
    assert not service.llm.busy()  # free at once
    assert service.conversations.list() == []


def test_a_decline_is_in_the_readers_language_when_the_question_does_not_tell(indexed):
    """ "horario biblioteca" has no word that tells Spanish from English: the interface's language decides
    (the app passes it; else ui.language); a question that does tell keeps its own language."""
    from chatbot.prompt import ABSTAIN

    def decline(settings, question, **kwargs):  # nothing found: the assistant's own sentence
        service = ChatService(settings, llm=scripted("never asked"))
        return list(service.stream(question, search=lambda q, k: [], **kwargs))[-1].answer.text

    assert decline(indexed, "horario biblioteca") == ABSTAIN["en"]  # no hint: English, as before
    assert decline(indexed, "horario biblioteca", language="es") == ABSTAIN["es"]
    assert decline(indexed, "What are the opening hours of the zoo?", language="es") == ABSTAIN["en"]
    spanish_ui = indexed.model_copy(update={"ui": indexed.ui.model_copy(update={"language": "es"})})
    assert decline(spanish_ui, "horario biblioteca") == ABSTAIN["es"]
