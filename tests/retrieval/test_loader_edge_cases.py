"""Edge cases of loading and chunking found in review: each used to index garbage, drop text or a file
silently, or hold gigabytes for one file. Real files, real tiny models (tests/conftest.py)."""

from __future__ import annotations

import base64
import os
import random
from pathlib import Path

from retrieval_helpers import chunk_table

from retrieval import chunking
from retrieval.chunking import chunk_document, word_starts
from retrieval.collection import Collection
from retrieval.embedding import Embedder
from retrieval.loaders import Document, load_file
from retrieval.walk import scan

SPANISH = "La cafetería de la señora Núñez está abierta por la mañana; allí se habla de política. "


def _docs(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    return docs


def _base64_line(megabytes: float) -> str:
    """One line of base64, no spaces or newlines: nothing for the chunker's separators to cut at."""
    rng = random.Random(7)
    return base64.b64encode(rng.randbytes(int(megabytes * 750_000))).decode("ascii")


# 1. A single huge line ----------------------------------------------------------------------------------


def test_a_single_line_file_is_cut_into_chunks_within_the_size_limit(settings, tmp_path):
    docs = _docs(tmp_path)
    line = _base64_line(2)
    (docs / "blob.txt").write_text(line, encoding="ascii")
    size = settings.retrieval.chunk_tokens

    report = Collection.open(settings, "blob").sync(docs)

    assert report.added == ["blob.txt"], report.failed
    texts = [text for _, text in chunk_table(Collection.open(settings, "blob"))]
    counter = Embedder(settings)
    assert max(len(t) for t in texts) <= size * chunking.MAX_CHARS_PER_TOKEN
    assert max(len(counter.token_starts(t)) for t in texts) <= size
    assert sum(len(t) for t in texts) >= len(line)  # cut, not truncated


def test_the_tokenizer_only_ever_sees_a_bounded_window(tmp_path):
    seen: list[int] = []

    def recording(text: str) -> list[int]:
        seen.append(len(text))
        return word_starts(text)

    line = _base64_line(1)
    doc = Document("big.txt")
    doc.add(line + "\n\n" + "plain words follow here " * 20_000)
    chunks = chunk_document(doc, recording, size=64, overlap=8)

    assert max(seen) <= chunking.TOKEN_WINDOW_CHARS
    assert max(len("".join(c.text.split())) for c in chunks) <= 64 * chunking.MAX_CHARS_PER_TOKEN  # no spaces
    assert max(len(word_starts(c.text)) for c in chunks) <= 64
    covered = 0  # the line's pieces follow each other with no gap: cut, nothing dropped
    for chunk in sorted(chunks, key=lambda c: c.start):
        assert chunk.start <= covered or covered >= len(line)
        covered = max(covered, chunk.end)
    assert covered == len(doc.text)


def test_windowed_token_counts_match_whole_text_counts():
    """Windows are cut before whitespace, so counting by windows finds the same tokens as counting at once."""
    text = "one two  three\nfour. " * 30_000
    doc = Document("words.txt")
    doc.add(text)
    chunks = chunk_document(doc, word_starts, size=50, overlap=0)

    assert sum(len(word_starts(c.text)) for c in chunks) == len(word_starts(doc.text))
    assert max(len(word_starts(c.text)) for c in chunks) <= 50


# 2. Mostly-UTF-8 text with a stray byte ------------------------------------------------------------------


def test_text_padded_with_spaces_packs_as_fully_as_plain_text():
    """The character cap counts no whitespace: a fixed-width report (words padded to columns) fills its
    chunks to the token limit, as plain text of the same words does."""
    words = [f"item{i} {i * 7} units shelf{i % 9} ok" for i in range(300)]
    padded, plain = Document("report.txt"), Document("plain.txt")
    padded.add("\n".join(f"{w.split()[0]:<30}{w.split()[1]:>20}{' '.join(w.split()[2:]):>40}" for w in words))
    plain.add("\n".join(words))

    chunks = [chunk_document(d, word_starts, 256, 0) for d in (padded, plain)]

    assert len(chunks[0]) == len(chunks[1])
    assert max(len(c.text) for c in chunks[0]) > 256 * chunking.MAX_CHARS_PER_TOKEN  # padding is not counted


def test_utf8_text_with_one_stray_latin1_byte_keeps_its_words(settings, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(SPANISH.encode("utf-8") * 20 + b"Firmado: Jos\xe9 P\xe9rez.\n")

    text = load_file(path, "notes.txt", settings.retrieval).documents[0].text

    assert "cafetería" in text and "señora Núñez" in text and "mañana" in text
    assert "José Pérez" in text  # the stray bytes are read as Windows-1252, the usual culprit


def test_files_wholly_in_latin1_or_utf16_still_decode(settings, tmp_path):
    (tmp_path / "latin1.txt").write_bytes(SPANISH.encode("latin-1") * 5)
    (tmp_path / "utf16.txt").write_bytes(SPANISH.encode("utf-16-le") * 5)

    for name in ("latin1.txt", "utf16.txt"):
        text = load_file(tmp_path / name, name, settings.retrieval).documents[0].text
        assert "cafetería" in text and "Núñez" in text, name


# 3. CSV with an unclosed quote ---------------------------------------------------------------------------


def _items_csv(third_row: str) -> str:
    rows = ["id,name,price", "1,widget 1,1.00", "2,widget 2,2.00", third_row]
    rows += [f"{i},widget {i},{i}.00" for i in range(4, 51)]
    return "\n".join(rows) + "\n"


def test_csv_with_an_unclosed_quote_fails_with_its_line(settings, tmp_path):
    docs = _docs(tmp_path)
    (docs / "items.csv").write_text(_items_csv('3,"widget 3,3.00'))
    (docs / "ok.csv").write_text(_items_csv('3,"widget 3, the large one",3.00'))

    report = Collection.open(settings, "csv").sync(docs)

    assert report.added == ["ok.csv"]
    assert "line 4" in report.failed["items.csv"] and "quote" in report.failed["items.csv"]


def test_csv_quote_closed_rows_later_fails(settings, tmp_path):
    """The runaway field ends at a later quote and the parse goes on: the row it made is still reported."""
    path = tmp_path / "items.csv"
    path.write_text(_items_csv('3,"widget 3,3.00').replace("10,widget 10,10.00", '10,widget 10",10.00'))

    error = _load_error(path, "items.csv", settings)

    assert "line 4" in error


def test_csv_with_a_multiline_cell_still_loads(settings, tmp_path):
    path = tmp_path / "addresses.csv"
    path.write_text('name,address,city\nAna,"Calle Mayor 1\nPiso 2",Madrid\nLuis,"Gran Vía 5",Madrid\n')

    text = load_file(path, "addresses.csv", settings.retrieval).documents[0].text

    assert "address: Calle Mayor 1\nPiso 2; city: Madrid" in text and "Luis" in text


def test_lenient_csv_still_loads(settings, tmp_path):
    """What a careless export writes, and a question-and-answer table whose answers run over lines with a
    comma each, are not runaway quotes."""
    faq = tmp_path / "faq.csv"
    faq.write_text(
        'question,answer\nWhere is it?,"In Madrid, near the station.\nOpen daily, 9 to 5.\n'
        'Closed in August, mostly.\nAsk at the desk, please."\nWho runs it?,The team\n'
    )
    parts = tmp_path / "parts.csv"
    parts.write_text('id,part,qty\n1,"3" screw",4\n2,washer,5\n')

    faq_text = load_file(faq, "faq.csv", settings.retrieval).documents[0].text
    parts_text = load_file(parts, "parts.csv", settings.retrieval).documents[0].text

    assert "Closed in August, mostly." in faq_text and "Who runs it?" in faq_text
    assert 'screw"' in parts_text and "washer" in parts_text


def _load_error(path: Path, source: str, settings) -> str:
    from retrieval.errors import LoadError

    try:
        load_file(path, source, settings.retrieval)
    except LoadError as exc:
        return str(exc)
    raise AssertionError(f"{source} loaded without error")


# 4. A multipart e-mail without a boundary ----------------------------------------------------------------


def test_multipart_mail_without_a_boundary_keeps_its_text(settings, tmp_path):
    docs = _docs(tmp_path)
    (docs / "broken.eml").write_bytes(
        b"From: ana@example.org\nSubject: Quarterly numbers\nContent-Type: multipart/mixed\n\n"
        b"--xyz\nContent-Type: text/plain\n\nThe quokka budget grew by twelve percent.\n--xyz--\n"
    )

    report = Collection.open(settings, "mail").sync(docs)

    assert report.added == ["broken.eml"], report.failed
    texts = " ".join(text for _, text in chunk_table(Collection.open(settings, "mail")))
    assert "quokka budget grew" in texts


def test_spanish_mail_in_latin1_keeps_its_accents(settings, tmp_path):
    """Old clients send 8-bit Latin-1 headers without encoded-words, and bodies with no charset or a wrong
    one: the words stay findable ("Reunión", "año"), not U+FFFD."""
    docs = _docs(tmp_path)
    (docs / "raw.eml").write_bytes(
        "From: Mar\u00eda <maria@example.org>\nSubject: Reuni\u00f3n del a\u00f1o\n"
        "Content-Type: text/plain\n\nLa reuni\u00f3n anual ser\u00e1 en Le\u00f3n.\n".encode("latin-1")
    )
    (docs / "lying.eml").write_bytes(
        b"From: luis@example.org\nSubject: =?utf-8?q?Presupuesto?=\n"
        b'Content-Type: text/plain; charset="utf-8"\n\n'
        + "El presupuesto del a\u00f1o para la cafeter\u00eda.\n".encode("latin-1")
    )
    report = Collection.open(settings, "mail").sync(docs)
    assert sorted(report.added) == ["lying.eml", "raw.eml"], report.failed
    texts = dict(chunk_table(Collection.open(settings, "mail")))
    assert "Subject: Reunión del año" in texts["raw.eml"] and "From: María" in texts["raw.eml"]
    assert "será en León" in texts["raw.eml"]
    assert "El presupuesto del año para la cafetería." in texts["lying.eml"]
    assert "\ufffd" not in "".join(texts.values())


def test_a_short_latin1_file_is_read_as_latin1_not_guessed():
    from retrieval.text import decode

    assert decode("nombre;año;ciudad\nAna;1990;León".encode("cp1252")) == "nombre;año;ciudad\nAna;1990;León"
    assert decode("¿Qué?".encode("cp1252")) == "¿Qué?"
    long_cyrillic = "Привет мир, как дела? Это длинный текст на русском языке для проверки."
    assert decode(long_cyrillic.encode("cp1251")) == long_cyrillic  # still detected, not read as Latin


# 5. File names that differ only in how they are escaped --------------------------------------------------


def test_latin1_name_and_its_escaped_spelling_are_both_indexed(settings, tmp_path):
    docs = _docs(tmp_path)
    os.mkdir(os.fsencode(docs / "team"))
    with open(os.path.join(os.fsencode(docs / "team"), b"caf\xe9.md"), "wb") as handle:
        handle.write(b"# Menu\n\nThe latin-1 named file talks about quokkas.\n")
    (docs / "team" / "caf\\xe9.md").write_text("# Menu\n\nThe literally named file talks about narwhals.\n")

    found = scan(docs.resolve(), skip_hidden=True)
    report = Collection.open(settings, "names").sync(docs)

    assert len(found.files) == 2
    assert sorted(report.added) == sorted(found.files) and len(report.added) == 2
    assert len({source for source, _ in chunk_table(Collection.open(settings, "names"))}) == 2
