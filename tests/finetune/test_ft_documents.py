"""Training text from every file type the retrieval side indexes, read with its loaders; a file that cannot
be read is named and skipped while the rest of the folder still becomes training data."""

from __future__ import annotations

from pathlib import Path

import pytest

# The document builders shared with the retrieval tests (a hand-written PDF, python-docx, an e-mail).
from document_files import make_docx, make_email, make_pdf
from ft_helpers import DOCS, write_docs

from finetune.data import collect, doc_items, tokenize

# One word per format that appears nowhere else, so finding it proves that file's text was used.
MARKERS = {
    "notes.md": "Ravenswood",
    "guide.docx": "Quokka",
    "page.html": "Marmalade",
    "mail.eml": "Aubergine",
    "mail.eml/minutes.txt": "Platypus",  # an attachment of the e-mail
    "report.pdf": "Xylophone",
    "cities.csv": "Walrus",
    "data.json": "Narwhal",
}


@pytest.fixture(scope="module")
def tokenizer(tiny_llm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llm_dir)


def _write_corpus(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.md").write_text("# Hours\n\nRavenswood opens at nine.\n")
    make_docx(folder / "guide.docx", "Handbook", ["The Quokka team answers the phone."], [["a", "b"]])
    (folder / "page.html").write_text(
        "<html><head><title>Policy</title></head><body><h1>Marmalade policy</h1>"
        "<p>Jars are counted on Mondays.</p></body></html>"
    )
    email = make_email("Budget", "The Aubergine budget is approved.", {"minutes.txt": b"Platypus minutes."})
    (folder / "mail.eml").write_bytes(email)
    (folder / "sub" / "report.pdf").write_bytes(make_pdf(["Xylophone quarterly report"]))
    (folder / "sub" / "cities.csv").write_text("city,mascot\nOslo,Walrus\nLima,Llama\n")
    (folder / "sub" / "data.json").write_text('[{"animal": "Narwhal", "sea": "Arctic"}]')
    # What must not be read: a corrupt PDF and DOCX, a hidden file, an unsupported type, the data directory.
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf\n")
    (folder / "sub" / "broken.docx").write_bytes(b"PK\x03\x04 a truncated zip archive")
    (folder / ".hidden.txt").write_text("Hiddenword must not be trained on.")
    (folder / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / "var").mkdir()
    (folder / "var" / "log.txt").write_text("Datadirword must not be trained on.")
    return folder


def test_every_retrieval_format_becomes_training_text_and_bad_files_are_named(
    ft_settings, tokenizer, tmp_path
):
    folder = _write_corpus(tmp_path / "corpus")
    found = collect(
        ft_settings.finetune,
        folder / "var",  # a data directory inside the document folder is never read
        docs_dirs=[folder],
        chat_files=[],
        use_feedback=False,
    )
    docs = [i for i in found.items if i.kind == "doc"]
    text = "\n".join(i.text or "" for i in docs)
    for marker in MARKERS.values():
        assert marker in text, marker
    for skipped in ("Hiddenword", "Datadirword"):
        assert skipped not in text
    assert any(i.source.startswith(f"{folder}/mail.eml/minutes.txt#") for i in docs)

    # The corrupt files are named with a reason, and nothing else failed.
    assert set(found.failed) == {str(folder / "broken.pdf"), str(folder / "sub" / "broken.docx")}
    assert all(reason for reason in found.failed.values())

    # The text reaches the tokenised examples (the last partial block kept, so nothing is cut off here).
    blocks = tokenize(docs, tokenizer, ft_settings.finetune.block_size, keep_tail=True)
    trained = "".join(tokenizer.decode(b["input_ids"]) for b in blocks)
    for marker in MARKERS.values():
        assert marker in trained, marker


def test_txt_and_md_passages_are_unchanged(ft_settings):
    """.txt/.md are read as raw text, as before the loaders: same passages, so the same content keys."""
    folder = write_docs(
        ft_settings.finetune.docs_dirs[0].parent / "plain", {**DOCS, "crlf.txt": "a\r\n\r\nb"}
    )
    found = collect(ft_settings.finetune, ft_settings.data_dir, docs_dirs=[folder], chat_files=[])
    before = doc_items(
        sorted(
            (str(folder / name), text.replace("\r\n", "\n"))
            for name, text in {**DOCS, "crlf.txt": "a\r\n\r\nb"}.items()
        ),
        ft_settings.finetune.passage_chars,
    )
    assert [(i.source, i.key) for i in found.items if i.kind == "doc"] == [(i.source, i.key) for i in before]
    assert found.failed == {}
