import pytest

from chatbot.citations import MarkerFilter, cited_numbers, clean_markers
from chatbot.language import detect_language


@pytest.mark.parametrize(
    ("text", "n", "expected"),
    [
        ("Paris [1].", 2, "Paris [1]."),
        ("Paris [3].", 2, "Paris."),
        ("Paris [1, 3] and [2].", 2, "Paris [1] and [2]."),
        ("See [4][2] and [1][2].", 2, "See [2] and [1, 2]."),
        ("Array[0] stays? [0]", 2, "Array stays?"),
        ("No markers [a].", 2, "No markers [a]."),
    ],
)
def test_clean_markers(text, n, expected):
    assert clean_markers(text, n) == expected


def test_streaming_filter_equals_batch_cleaning_for_any_split():
    text = "It opens at nine [1] [5] and closes at eight [4][2], see [1, 7]. Done [x]."
    expected = clean_markers(text, 2)
    for size in range(1, 8):
        f = MarkerFilter(2)
        pieces = [text[i : i + size] for i in range(0, len(text), size)]
        assert "".join(f.feed(p) for p in pieces) + f.flush() == expected


def test_cited_numbers_in_order():
    assert cited_numbers("a [2] b [1, 2] c [3]") == [2, 1, 3]


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("¿Dónde se guardan las conversaciones?", "es"),
        ("Cómo borro una colección", "es"),
        ("y cuando cierra la biblioteca", "es"),
        ("Where are conversations stored?", "en"),
        ("and when does it close", "en"),
        ("", "en"),
    ],
)
def test_detect_language(text, lang):
    assert detect_language(text) == lang
