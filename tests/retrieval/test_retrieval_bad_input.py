"""Bad files are skipped with a specific reason; every other file is indexed; the sync never aborts."""

from __future__ import annotations

import io
import os

import pytest
from document_files import make_docx, make_pdf, make_zip_bomb_docx
from retrieval_helpers import chunk_table

from retrieval.collection import Collection


def _encrypted_pdf() -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf(["Top secret minutes."]))))
    writer.encrypt("secret", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_bad_files_are_reported_and_the_rest_indexed(settings, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.txt").write_text("A healthy document about quokkas.")
    make_docx(docs / "good.docx", "Fine", ["A fine docx about narwhals."])
    (docs / "empty.md").write_bytes(b"")
    (docs / "binary.txt").write_bytes(os.urandom(2048).replace(b"\0", b"\1") + b"\0\0\0" + os.urandom(64))
    valid = make_pdf(["Page text that is cut off."])
    (docs / "truncated.pdf").write_bytes(valid[: len(valid) // 2])
    (docs / "fake.pdf").write_bytes(b"this is not a pdf at all")
    (docs / "locked.pdf").write_bytes(_encrypted_pdf())
    (docs / "image-only.pdf").write_bytes(make_pdf([""]))
    (docs / "broken.docx").write_bytes(b"PK\x03\x04 definitely not a zip archive")
    (docs / "protected.docx").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 512)
    make_zip_bomb_docx(docs / "bomb.docx", megabytes=20)
    (docs / "big.txt").write_text("word " * 12_000)  # 60 kB, over the limit set below
    (docs / "bad.json").write_text('{"a": 1,,}')
    (docs / "bad.jsonl").write_text('{"a": 1}\nnot json\n')
    (docs / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    settings.retrieval.max_file_mb = 0.05

    col = Collection.open(settings, "bad")
    report = col.sync(docs)

    assert sorted(report.added) == ["good.docx", "good.txt"]
    expected = {
        "empty.md": "empty file",
        "binary.txt": "binary content",
        "truncated.pdf": "corrupt PDF",
        "fake.pdf": "corrupt PDF: no %PDF header",
        "locked.pdf": "encrypted PDF",
        "image-only.pdf": "no text found",
        "broken.docx": "corrupt DOCX: not a zip archive",
        "protected.docx": "encrypted DOCX",
        "bomb.docx": "decompression bomb",
        "big.txt": "over the limit retrieval.max_file_mb",
        "bad.json": "invalid JSON: Expecting property name enclosed in double quotes at line 1",
        "bad.jsonl": "invalid JSON on line 2",
    }
    assert set(report.failed) == set(expected)
    for path, reason in expected.items():
        assert reason in report.failed[path], (path, report.failed[path])
    assert report.unsupported == ["photo.png"]
    assert {s for s, _ in chunk_table(col)} == {"good.txt", "good.docx"}
    assert col.stats()["failures"] == report.failed

    # Unchanged bad files are not re-read, but stay reported; fixing one indexes it.
    again = col.sync(docs)
    assert again.failed == report.failed and again.chunks_embedded == 0
    (docs / "bad.json").write_text('{"a": "now valid about wombats"}')
    fixed = col.sync(docs)
    assert fixed.added == ["bad.json"] and "bad.json" not in fixed.failed
    assert col.search("wombats", k=1, mode="bm25")[0].source == "bad.json"


def test_attachment_failure_does_not_drop_the_message(settings, tmp_path):
    from document_files import make_email

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "mail.eml").write_bytes(make_email("Hello", "Body about ibises.", {"scan.pdf": b"%PDF-1.4 junk"}))
    col = Collection.open(settings, "mail")
    report = col.sync(docs)
    assert report.added == ["mail.eml"]
    assert "corrupt PDF" in report.failed["mail.eml/scan.pdf"]
    assert col.search("ibises", k=1, mode="bm25")[0].source == "mail.eml"


def test_pdf_decompression_bomb_is_refused():
    import zlib

    from retrieval.config import RetrievalSettings
    from retrieval.errors import LoadError
    from retrieval.loaders import load_bytes

    pdf = make_pdf(["x"])
    packer = zlib.compressobj(9)
    packed = packer.compress(b"0" * 100_000_000) + packer.flush()  # 100 MB of content in ~100 kB
    stream = b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(packed) + packed + b"\nendstream"
    start = pdf.index(b"5 0 obj")
    bomb = pdf.replace(pdf[start : pdf.index(b"endobj", start)], b"5 0 obj\n" + stream + b"\n")
    with pytest.raises(LoadError, match="decompression bomb suspected"):
        load_bytes(bomb, "bomb.pdf", RetrievalSettings())
