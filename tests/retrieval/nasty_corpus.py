"""A corpus of nasty files, generated on the spot: each kind is something a folder really gets (by accident or
on purpose), with the reason a sync must report for it. Nothing is downloaded."""

from __future__ import annotations

import json
import os
import shutil
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from document_files import make_pdf, make_zip_bomb_docx

# The retrieval settings the corpus is meant for (as APP_* variables): limits low enough to trip quickly.
LIMITS = {"APP_RETRIEVAL__MAX_DOCX_XML_MB": "1", "APP_RETRIEVAL__MAX_FILE_MB": "2"}


def _deep_html(path: Path) -> None:
    path.write_text("<html><body>" + "<div>" * 100_000 + "deep" + "</div>" * 100_000 + "</body></html>")


def _big_docx(path: Path) -> None:
    """A valid DOCX of ~1.5 MB of paragraphs: under the bomb checks, over max_docx_xml_mb (1 MB here)."""
    body = "".join(
        f"<w:p><w:r><w:t>Paragraph {i} about nothing much.</w:t></w:r></w:p>" for i in range(30_000)
    )
    ns = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr(
            "word/document.xml", f'<?xml version="1.0"?><w:document {ns}><w:body>{body}</w:body></w:document>'
        )


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _loop(path: Path) -> None:
    (path.parent / "loop-b.md").symlink_to(path)
    path.symlink_to(path.parent / "loop-b.md")


# name -> (how to make it in the folder, what the sync must say about it)
KINDS: dict[str, tuple[Callable[[Path], None], str]] = {
    "empty.md": (lambda p: p.write_bytes(b""), "empty file"),
    "binary.txt": (lambda p: p.write_bytes(bytes(range(256)) * 64), "binary content"),
    "deep.html": (_deep_html, "retrieval.max_html_depth"),
    "big.docx": (_big_docx, "retrieval.max_docx_xml_mb"),
    "bomb.docx": (lambda p: make_zip_bomb_docx(p, megabytes=20), "decompression bomb"),
    "huge.txt": (lambda p: p.write_bytes(b"word " * 500_000), "over the limit retrieval.max_file_mb"),
    "truncated.pdf": (lambda p: p.write_bytes(make_pdf(["Cut off."])[:200]), "corrupt PDF"),
    "not-a-pdf.pdf": (lambda p: p.write_bytes(b"MZ\x90\x00 an executable"), "corrupt PDF"),
    "deep.json": (lambda p: p.write_text("[" * 100_000 + "]" * 100_000), "too deeply nested"),
    "bad.jsonl": (lambda p: p.write_text('{"a": 1}\n{oops\n'), "invalid JSON on line 2"),
    "passwd-link.txt": (lambda p: p.symlink_to("/etc/passwd"), "a link to a file outside the synced folder"),
    "etc-link": (lambda p: p.symlink_to("/etc", target_is_directory=True), "a link to a folder outside"),
    "dangling.md": (lambda p: p.symlink_to(p.parent / "nowhere.md"), "broken symbolic link"),
    "loop-a.md": (_loop, "broken symbolic link"),
    "pipe.txt": (_fifo, "not a regular file"),
}


# Odd but harmless names: indexed like any file (a non-UTF-8 name used to stop the whole sync).
# name on disk -> name in the index
ODD_NAMES = {b"caf\xe9-latin1.md": "caf\\xe9-latin1.md", b"line\nbreak.md": "line\nbreak.md"}


def make_corpus(folder: Path) -> dict[str, str]:
    """Every kind in ``folder``; returns {relative path: expected reason fragment}."""
    expected = {}
    for name, (make, reason) in KINDS.items():
        make(folder / name)
        expected[name] = reason
    expected["loop-b.md"] = "broken symbolic link"
    for raw in ODD_NAMES:
        (folder / os.fsdecode(raw)).write_text("# Odd\n\nAn oddly named note about lemurs.\n")
    return expected


def unprivileged(command: list[str]) -> list[str]:
    """``command`` run so that file permissions bind it: as root, without the capabilities that let root
    read any file (setpriv, util-linux); as anyone else, as it is."""
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: no file can be made unreadable")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, "--bounding-set", caps, "--inh-caps", caps, *command]


SYNC_SCRIPT = """
import json, sys
from pathlib import Path
from chatbot.settings import load_settings
from retrieval.collection import Collection

folder, after, vanish = sys.argv[1:4]

def progress(done, total, rel):
    if rel == after:  # a file that disappears while the sync runs
        Path(folder, vanish).unlink(missing_ok=True)

report = Collection.open(load_settings(), sys.argv[4]).sync(folder, progress=progress)
print(json.dumps(report.to_dict()))
"""


def sync_unprivileged(env: dict[str, str], collection: str, folder: Path, after: str, vanish: str) -> dict:
    """Sync ``folder`` in a process that file permissions bind, deleting ``vanish`` once ``after`` is read."""
    import subprocess

    command = unprivileged([sys.executable, "-c", SYNC_SCRIPT, str(folder), after, vanish, collection])
    done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
