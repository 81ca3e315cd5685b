"""Passages in the question's language first (chat.same_language_first): keyword search matches "formats" and
"formatos" by their common stem, so a collection holding a page and its translation finds both."""

from __future__ import annotations

from chatbot.chain import same_language_first
from retrieval.collection import Collection
from retrieval.types import Hit

EN = "The assistant indexes plain text, Markdown, HTML and PDF files."
ES = "El asistente indexa archivos de texto plano, Markdown, HTML y PDF."


def hit(n: int, text: str, score: float) -> Hit:
    return Hit(n, text, f"doc{n}.md", score)


def test_the_question_language_comes_first_among_the_strong_hits():
    hits = [hit(1, ES, 1.0), hit(2, EN, 0.9), hit(3, "Los archivos borrados salen del índice.", 0.8)]
    assert [h.chunk_id for h in same_language_first("Which formats can I index?", hits, 2)] == [2, 1]
    assert [h.chunk_id for h in same_language_first("¿Qué formatos puedo indexar?", hits, 2)] == [1, 3]
    # a question whose language cannot be told keeps the order
    assert [h.chunk_id for h in same_language_first("PDF Markdown", hits, 3)] == [1, 2, 3]


def test_a_weak_hit_is_not_put_above_a_strong_one_for_its_language():
    hits = [hit(1, ES, 1.0), hit(2, "Los índices se guardan en disco.", 0.7), hit(3, EN, 0.3)]
    assert [h.chunk_id for h in same_language_first("Which formats can I index?", hits, 2)] == [1, 2]
    # a Spanish collection still answers an English question
    assert same_language_first("Which formats can I index?", hits[:2], 3) == hits[:2]


def test_a_bilingual_collection_answers_each_language_from_its_own_page(settings, tmp_path):
    folder = tmp_path / "guide"
    folder.mkdir()
    (folder / "formats.md").write_text(EN, encoding="utf-8")
    (folder / "formatos.md").write_text(ES, encoding="utf-8")
    (folder / "other.md").write_text("Backups run every night at two.", encoding="utf-8")
    col = Collection.open(settings, "guide")
    col.sync(folder)
    for question, page in (
        ("Which formats does the assistant index?", "formats.md"),
        ("¿Qué formatos indexa el asistente?", "formatos.md"),
    ):
        found = col.search(question, 4, mode="bm25")
        assert {h.source for h in found[:2]} == {"formats.md", "formatos.md"}  # the stem finds both pages
        assert same_language_first(question, found, 1)[0].source == page
