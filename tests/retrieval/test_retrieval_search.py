"""Search modes, calibrated fusion, approximate index types, reranking and watching a folder."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from retrieval_helpers import chunk_table, faiss_count, wait_until

from retrieval.collection import Collection
from retrieval.search import fuse, match_expression

DOCS = {
    "hours.txt": "La biblioteca abre a las nueve de la mañana y cierra a las ocho.",
    "cats.txt": "Cats sleep for most of the day and hunt at night.",
    "rain.txt": "Rain is frequent in the northern valleys during spring.",
    "lang.txt": "El asistente responde preguntas sobre los documentos.",
}


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_fusion_follows_the_stronger_retriever_and_breaks_its_ties():
    bm25 = {1: 10.0, 2: 9.9, 3: 2.0}
    dense = {2: 0.9, 4: 0.8, 1: 0.2}
    fused = fuse(bm25, dense, weight=0.3)
    assert set(fused) == {1, 2, 3, 4}
    assert max(fused, key=fused.get) == 2  # near-tie in BM25, clearly better dense score
    assert fused[4] < fused[1]  # dense-only candidate does not beat a strong BM25 match
    assert fuse(bm25, dense, weight=0.0)[1] == 1.0 and fuse({}, {}, 0.5) == {}


def test_match_expression_quotes_words_and_ignores_operators():
    expected = '"hora"* OR "abre"* OR "near"* OR "x"'
    # "qué", "or", "not": function words, left out
    assert match_expression('¿Qué "hora" abre? OR NOT NEAR x*') == expected
    assert match_expression("¿?!") is None


def test_match_expression_leaves_function_words_out_unless_there_is_nothing_else():
    assert match_expression("How do I reindex a collection?") == '"reindex"* OR "collect"*'
    assert match_expression("¿Dónde está el índice?") == '"indic"*'
    assert match_expression("What is it?") == '"what"* OR "is" OR "it"'  # nothing else to search for


def test_keyword_search_finds_other_forms_of_a_word_in_english_and_spanish(settings, tmp_path):
    """Words match by their Snowball stem: plural and singular, the forms of a verb, in both languages; a
    short word, a number or a code only as written."""
    folder = tmp_path / "forms"
    folder.mkdir()
    texts = {
        "archivos.md": "Los archivos se guardan cada noche en el servidor.",
        "indexing.md": "Indexing runs every hour and skips unchanged files.",
        "casa.md": "La casa es nueva.",
        "castillo.md": "El castillo es antiguo.",
        "model.md": "The MX-540 model has 3 ports.",
        "other.md": "Nothing here is about that.",
    }
    for name, text in texts.items():
        (folder / name).write_text(text, encoding="utf-8")
    col = Collection.open(settings, "forms")
    col.sync(folder)

    def found(query: str) -> list[str]:
        return [h.source for h in col.search(query, 5, mode="bm25")]

    assert found("¿Dónde se guarda un archivo?") == ["archivos.md"]
    assert found("When is the index built?") == ["indexing.md"]
    assert found("Which file is skipped?") == ["indexing.md"]
    assert found("castillos") == ["castillo.md"]
    assert found("casas") == ["casa.md"]  # "casa"*: "cas" would also find "castillo"
    assert found("cas") == []  # a short word as written
    assert found("541") == [] and found("540") == ["model.md"]  # a number as written


def test_keyword_search_ranks_by_the_subject_not_by_the_phrasing(settings, tmp_path):
    folder = tmp_path / "faq"
    folder.mkdir()
    (folder / "faq.md").write_text("How do I do it? How do I get there? How do I know?", encoding="utf-8")
    (folder / "backup.md").write_text("The backup is restored from the nightly copy.", encoding="utf-8")
    col = Collection.open(settings, "faq")
    col.sync(folder)
    hits = col.search("How do I restore a backup?", 2, mode="bm25")
    assert [h.source for h in hits] == ["backup.md"]  # the FAQ's "How do I" does not count


def test_a_huge_query_searches_its_first_words_only(settings, docs):
    words = [f"w{i}" for i in range(100_000)]
    assert match_expression(" ".join(words), max_words=64).count(" OR ") == 63
    col = Collection.open(settings, "huge-query")
    col.sync(docs)
    query = "biblioteca " + " ".join(words) * 8  # ~5 MB, a word per distinct term
    started = time.perf_counter()
    hits = col.search(query, k=1, mode="bm25")
    elapsed = time.perf_counter() - started
    print(f"\n[query cap] a {len(query) / 1e6:.1f} MB BM25 query answered in {elapsed:.2f} s")
    assert hits[0].source == "hours.txt" and elapsed < 10  # was: every word ORed, minutes and GBs


def test_modes_rank_with_accents_folded(settings, docs):
    col = Collection.open(settings, "modes")
    col.sync(docs)
    bm25 = col.search("BIBLIOTECA manana", k=2, mode="bm25")  # case and accents folded
    assert bm25[0].source == "hours.txt" and bm25[0].metadata["bm25"] > 0
    for mode in ("dense", "hybrid"):
        found = col.search("biblioteca mañana", k=3, mode=mode)
        assert len(found) == 3 and [h.score for h in found] == sorted((h.score for h in found), reverse=True)
    assert col.search("biblioteca mañana", k=1)[0].source == "hours.txt"  # hybrid, the default
    assert len(col.search("night", k=10)) == 4
    with pytest.raises(ValueError, match="unknown search mode"):
        col.search("x", mode="fuzzy")


@pytest.mark.parametrize("index_type", ["hnsw", "ivf"])
def test_approximate_index_types_stay_in_sync(settings, docs, index_type):
    settings.retrieval.index_type = index_type
    col = Collection.open(settings, f"approx-{index_type}")
    col.sync(docs)
    (docs / "cats.txt").unlink()
    (docs / "owls.txt").write_text("Owls hunt at night in the forest.", encoding="utf-8")
    col.sync(docs)
    assert faiss_count(col) == len(chunk_table(col)) == 4
    assert {h.source for h in col.search("night hunt", k=4, mode="dense")} == {
        "hours.txt",
        "rain.txt",
        "lang.txt",
        "owls.txt",
    }


def test_cross_encoder_reranks_candidates(settings, docs, tiny_embedder_dir, tmp_path):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    raw = tiny_embedder_dir.parent / "raw"
    torch.manual_seed(0)
    config = BertConfig.from_pretrained(raw, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(tmp_path / "reranker")
    AutoTokenizer.from_pretrained(raw).save_pretrained(tmp_path / "reranker")
    settings.retrieval.reranker = str(tmp_path / "reranker")
    col = Collection.open(settings, "rerank")
    col.sync(docs)
    found = col.search("biblioteca", k=3)
    assert len(found) == 3 and all("fused" in h.metadata for h in found)
    assert [h.score for h in found] == sorted((h.score for h in found), reverse=True)


def test_watch_syncs_after_changes(settings, docs):
    from retrieval.watch import watch

    col = Collection.open(settings, "watched")
    col.sync(docs)
    reports, stop = [], threading.Event()
    watcher = threading.Thread(target=watch, args=(col, docs, reports.append, stop), kwargs={"debounce": 0.3})
    watcher.start()
    try:
        time.sleep(0.5)
        (docs / "new.txt").write_text("Fresh text about axolotls.", encoding="utf-8")
        wait_until(lambda: any(r.added == ["new.txt"] for r in reports))
    finally:
        stop.set()
        watcher.join(10)
    assert any(r.added == ["new.txt"] for r in reports)
    assert col.search("axolotls", k=1, mode="bm25")[0].source == "new.txt"


def test_collections_share_one_embedding_model_and_another_setting_loads_its_own(
    settings, docs, tiny_embedder_dir, tmp_path
):
    """A server chatting with many collections holds one copy of the embedding model, not one each."""
    import shutil

    from retrieval.embedding import load_embedder

    first, second = Collection.open(settings, "one"), Collection.open(settings, "two")
    first.sync(docs), second.sync(docs)
    assert first.embedder is not second.embedder
    assert first.embedder.model is second.embedder.model is load_embedder(settings)
    assert [h.source for h in first.search("biblioteca", 2)] == [
        h.source for h in second.search("biblioteca", 2)
    ]
    copy = shutil.copytree(tiny_embedder_dir, tmp_path / "other-embedder")
    other = settings.model_copy(
        update={"models": settings.models.model_copy(update={"embedding": str(copy)})}
    )
    assert load_embedder(other) is not load_embedder(settings)


def test_search_without_a_source_is_search_of_the_collection_without_it(settings, docs, tmp_path):
    every = Collection.open(settings, "every")
    every.sync(docs)
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for name, text in DOCS.items():
        if name != "hours.txt":
            (fewer / name).write_text(text, encoding="utf-8")
    three = Collection.open(settings, "three")
    three.sync(fewer)
    query = "¿A qué hora abre y cierra la biblioteca, y qué responde el asistente?"
    for mode in ("hybrid", "dense", "bm25"):
        left = every.search(query, 3, mode=mode, without=["hours.txt"])
        alone = three.search(query, 3, mode=mode)
        assert [h.source for h in left] == [h.source for h in alone], mode
        assert "hours.txt" not in {h.source for h in left}
        if mode != "bm25":  # (raw BM25 scores count the file in their word statistics)
            # the fused scores are set by the remaining candidates, as in the collection without the file
            # (scaled, BM25's word statistics move them by less than 1e-4)
            assert [h.score for h in left] == pytest.approx([h.score for h in alone], abs=1e-4), mode
    # dropping the file's hits from the results instead leaves the others scaled against it: lower
    left = every.search(query, 3, without="hours.txt")  # one name, as a string
    dropped = [h for h in every.search(query, 4) if h.source != "hours.txt"]
    assert dropped[0].source == left[0].source and dropped[0].score < left[0].score
    assert [h.source for h in every.search(query, 4, without=["nothing.txt"])] == [
        h.source for h in every.search(query, 4)
    ]


def test_search_without_a_source_takes_as_many_candidates_as_usual(tmp_path):
    """Each retriever contributes its usual number of candidates (``candidates``) from what is left, not more:
    extra candidates would move the low end of the scaling. (The embedded embedding model: the tiny test
    model gives every text nearly the same vector, so its dense ranking is all ties.)"""
    from chatbot.settings import load_settings
    from retrieval.search import bm25_scores, dense_scores, rank

    settings = load_settings(data_dir=tmp_path / "var", models={"device": "cpu"})
    col = Collection.open(settings, "sample")
    col.sync(Path(__file__).resolve().parents[2] / "data" / "sample")
    query = "How do I delete a collection and where are conversations stored?"
    view, vector = col._current_view(), col.embedder.embed_query(query)
    with view.lock:
        without = frozenset(i for (i,) in view.conn.execute("SELECT id FROM chunks WHERE source = 'faq.md'"))
    assert len(without) > 3
    retrieval = settings.retrieval.model_copy(update={"candidates": 3, "bm25_depth": 3})
    allowed: set[int] = set()
    for scores in (bm25_scores(view, query, 1000), dense_scores(view, vector, 1000)):
        allowed |= set([i for i in scores if i not in without][:3])
    ranked = {i for i, _, _ in rank(view, query, vector, 3, "hybrid", retrieval, without)}
    assert len(ranked) == 3 and ranked <= allowed
