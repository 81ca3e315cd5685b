"""Every supported format is parsed into the right text, headings, pages and sources."""

from __future__ import annotations

import json
from pathlib import Path

from document_files import make_docx, make_email, make_pdf
from retrieval_helpers import chunk_table

from retrieval.chunking import chunk_document, word_starts
from retrieval.collection import Collection
from retrieval.config import RetrievalSettings
from retrieval.loaders import Document, load_bytes
from retrieval.text import clean, decode


def _write_all_formats(folder: Path) -> None:
    folder.mkdir()
    (folder / "notes.txt").write_text(
        "Plain text about the aardvark census.\n\nSecond paragraph.", encoding="utf-8"
    )
    (folder / "guide.md").write_text(
        "# Guide\n\nIntro line.\n\n## Opening hours\n\nThe museum opens at nine.\n\n"
        "```\n# not a heading\n```\n"
    )
    (folder / "manual.rst").write_text(
        "Manual\n======\n\nOverview text.\n\nInstall\n-------\n\nRun the zebra installer.\n"
    )
    (folder / "page.html").write_text(
        "<html><head><title>Web page</title><style>.x{color:red}</style><script>var secret=1;</script></head>"
        "<body><nav>Home | About | Menu</nav><h1>Welcome</h1><p>Visible <b>giraffe</b> paragraph.</p>"
        "<footer>copyright footer</footer></body></html>"
    )
    (folder / "report.pdf").write_bytes(make_pdf(["First page about otters.", "Second page about beavers."]))
    make_docx(
        folder / "memo.docx",
        "Budget memo",
        ["The budget for llamas grows."],
        [["item", "cost"], ["hay", "10"]],
    )
    (folder / "prices.csv").write_text("product,price,colour\nwidget,3.50,red\ngadget,7.25,blue\n")
    (folder / "people.json").write_text(json.dumps([{"name": "Iris", "role": "botanist"}, {"name": "Olaf"}]))
    (folder / "events.jsonl").write_text('{"event": "launch", "place": "Lisbon"}\n{"event": "review"}\n')
    attachment = make_pdf(["Attached minutes mention the walrus."])
    (folder / "mail.eml").write_bytes(
        make_email("Quarterly plan", "Body about pelicans.", {"minutes.pdf": attachment})
    )
    box = b"".join(  # an mbox escapes body lines starting with "From "
        b"From sender@example.org Mon Mar  2 10:00:00 2026\n"
        + make_email(subject, body, files).replace(b"\nFrom the", b"\n>From the")
        + b"\n"
        for subject, body, files in [
            ("First message", "Talks about flamingos.", None),
            (
                "Second message",
                "Herons.\nFrom the start, talks about herons.",
                {"notes.txt": b"Notes on cormorants."},
            ),
        ]
    )
    (folder / "archive.mbox").write_bytes(box)


def test_every_format_is_indexed_with_its_structure(settings, tmp_path):
    _write_all_formats(tmp_path / "docs")
    col = Collection.open(settings, "formats")
    report = col.sync(tmp_path / "docs")

    assert report.failed == {}
    assert len(report.added) == 11
    chunks = chunk_table(col)
    by_source: dict[str, str] = {}
    for source, text in chunks:
        by_source[source] = by_source.get(source, "") + "\n" + text
    assert set(by_source) == {
        "notes.txt", "guide.md", "manual.rst", "page.html", "report.pdf", "memo.docx", "prices.csv",
        "people.json", "events.jsonl", "mail.eml", "mail.eml/minutes.pdf", "archive.mbox#1", "archive.mbox#2",
        "archive.mbox#2/notes.txt",
    }  # fmt: skip
    html = by_source["page.html"]
    assert "giraffe" in html and "Welcome" in html
    assert "secret" not in html and "color" not in html and "Menu" not in html and "copyright" not in html
    assert (
        "widget" in by_source["prices.csv"] and "price: 3.50" in by_source["prices.csv"]
    )  # row keeps headers
    assert "name: Iris" in by_source["people.json"] and "place: Lisbon" in by_source["events.jsonl"]
    assert "hay | 10" in by_source["memo.docx"]
    mail = by_source["mail.eml"]
    assert (
        "Subject: Quarterly plan" in mail
        and "ana@example.org" in mail
        and "2026" in mail
        and "pelicans" in mail
    )
    assert "walrus" in by_source["mail.eml/minutes.pdf"]
    assert "From the start, talks about herons." in by_source["archive.mbox#2"]
    assert "cormorants" in by_source["archive.mbox#2/notes.txt"]

    pdf_hits = {h.page: h for h in col.search("beavers", k=3, mode="bm25") if h.source == "report.pdf"}
    assert 2 in pdf_hits and "beavers" in pdf_hits[2].text
    md = col.search("museum opens nine", k=1, mode="bm25")[0]
    assert md.source == "guide.md" and md.title == "Guide > Opening hours"
    assert md.text.startswith("Opening hours\n\nThe museum opens at nine.")
    assert "# not a heading" in md.text  # inside a code fence: not a section break
    rst = col.search("zebra installer", k=1, mode="bm25")[0]
    assert rst.source == "manual.rst" and rst.title == "Manual > Install"
    docx_hit = col.search("llamas", k=1, mode="bm25")[0]
    assert docx_hit.source == "memo.docx" and docx_hit.title == "Budget memo"
    # character offsets point into the document text the loader produced
    assert docx_hit.metadata["end"] - docx_hit.metadata["start"] == len(docx_hit.text)


def test_encodings_are_detected_not_ignored():
    text = "Café, niño, façade: «résumé» — 10 €"
    assert decode(text.encode("utf-16")) == text
    assert decode(text.encode("utf-16-le")) == text
    assert decode(text.encode("utf-8-sig")) == text
    assert decode(text.encode("cp1252")) == text
    latin1 = "Ceci est un résumé en français, avec des accents: été, à, où, çà et là."
    assert decode(latin1.encode("latin-1")) == latin1


def test_invisible_unicode_is_stripped_at_ingestion():
    hidden = "pass\u200bword \u202eevil\u202c tag\U000e0041\U000e0042s soft\u00adhyphen \ufeffbom"
    assert clean(hidden) == "password evil tags softhyphen bom"
    loaded = load_bytes(hidden.encode("utf-8"), "x.txt", RetrievalSettings())
    assert loaded.documents[0].text == "password evil tags softhyphen bom"


def test_chunks_respect_size_overlap_sections_and_offsets():
    doc = Document("d.md")
    words = [f"w{i}" for i in range(100)]
    doc.add(" ".join(words[:50]) + ".\n\n" + " ".join(words[50:]), title="A")
    doc.add("tail section", title="B", page=2)
    chunks = chunk_document(doc, word_starts, size=20, overlap=5)
    assert all(len(c.text.split()) <= 20 for c in chunks)
    assert all(doc.text[c.start : c.end] == c.text for c in chunks)
    assert chunks[-1].text == "tail section" and chunks[-1].title == "B" and chunks[-1].page == 2
    first, second = chunks[0].text.split(), chunks[1].text.split()
    assert 0 < len(set(first) & set(second)) <= 5  # overlap, in tokens, within one section
    covered = {w for c in chunks for w in c.text.replace(".", "").split()}
    assert set(words) <= covered
