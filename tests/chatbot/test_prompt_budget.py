import pytest

from chatbot.llm import LocalChatModel
from chatbot.prompt import TRUNCATED, PromptTooLong, build_prompt
from finetune.models import load_generator
from retrieval.types import Hit

SENTENCE = "The library opens at nine in the morning and closes at eight in the evening. "


@pytest.fixture
def llm(settings):
    return LocalChatModel(generator=load_generator(settings), generation=settings.generation)


def hits(n, words_each):
    text = " ".join(SENTENCE.split() * (words_each // 15 + 1))
    return [Hit(i, f"({i}) {text}", f"doc{i}.md", 1.0 - i / 100) for i in range(n)]


def conversation(turns):
    out = []
    for i in range(turns):
        out += [("user", f"question {i} " + SENTENCE), ("assistant", f"answer {i} " + SENTENCE)]
    return out


@pytest.mark.parametrize("limit", [260, 400, 448])
def test_long_documents_and_long_history_never_overflow(llm, limit):
    history = conversation(30)
    built = build_prompt("When does the library open?", hits(6, 120), history, llm.count_tokens, limit)
    assert built.tokens <= limit
    assert llm.count_tokens(built.messages) == built.tokens
    # history is trimmed oldest-first: what is kept is the most recent suffix
    kept = built.messages[1:-1]
    assert len(kept) == built.history_kept
    if kept:
        assert kept[-1].content == history[-1][1]
    # sources are cut by rank, whole: the shown ones are the best-ranked, in order
    assert [h.chunk_id for h in built.hits] == list(range(len(built.hits)))


def test_sources_come_before_history(llm):
    built = build_prompt("When?", hits(3, 30), conversation(10), llm.count_tokens, 560)
    assert len(built.hits) == 3  # all small sources fit ...
    assert 0 < built.history_kept < 20  # ... and history fills what is left


def test_single_huge_source_is_shortened_not_dropped(llm):
    built = build_prompt("When?", hits(2, 3000), [], llm.count_tokens, 300)
    assert len(built.hits) == 1
    assert built.hits[0].text.endswith(TRUNCATED) and built.hits[0].metadata["truncated"]
    assert built.tokens <= 300
    assert "[1]" in built.messages[-1].content


def test_question_too_long_is_refused_clearly(llm):
    with pytest.raises(PromptTooLong, match="shorten"):
        build_prompt(SENTENCE * 50, [], [], llm.count_tokens, 100)


def test_no_room_for_any_source_shows_none(llm):
    base = build_prompt("When?", [], [], llm.count_tokens, 10_000).tokens
    built = build_prompt("When?", hits(2, 3000), [], llm.count_tokens, base + 2)
    assert built.hits == [] and built.tokens <= base + 2


@pytest.fixture
def strict_count(llm):
    """Token count under Gemma's chat template, which refuses roles that do not alternate from a question."""
    import copy

    from chatbot.llm import to_chat_dicts
    from finetune.models import GEMMA_TEMPLATE

    tok = copy.deepcopy(llm.generator.tokenizer)
    tok.chat_template = GEMMA_TEMPLATE

    def count(messages):
        return len(
            tok.apply_chat_template(to_chat_dicts(messages), add_generation_prompt=True, tokenize=True)
        )

    return count


@pytest.mark.parametrize("limit", [300, 420, 560, 4000])
def test_history_is_kept_in_whole_turns_that_a_strict_template_takes(strict_count, limit):
    history = conversation(8)
    built = build_prompt("When?", hits(2, 30), history, strict_count, limit)  # raised before for an odd cut
    kept = built.messages[1:-1]
    assert built.history_kept == len(kept) and len(kept) % 2 == 0
    assert [m.type for m in kept] == ["human", "ai"] * (len(kept) // 2)
    assert [m.content for m in kept] == [c for _, c in history[len(history) - len(kept) :]]
    if limit == 4000:
        assert len(kept) == len(history)


def test_an_irregular_history_is_made_into_turns(strict_count):
    """A window that opens with an answer, two questions in a row (the first one's answer failed), and a last
    question left unanswered: what a stored conversation or a caller can hold."""
    history = [
        ("assistant", "an answer cut from its question"),
        ("user", "first question"),
        ("user", "second question"),
        ("assistant", "answer to both"),
        ("user", "a question whose answer failed"),
    ]
    built = build_prompt("When?", hits(1, 30), history, strict_count, 4000)
    kept = [(m.type, m.content) for m in built.messages[1:-1]]
    assert kept == [("human", "first question\n\nsecond question"), ("ai", "answer to both")]
    assert built.history_kept == 2
