"""DOCX: paragraphs and tables in document order; sections follow the Heading styles."""

from __future__ import annotations

import io
import zipfile
from typing import TYPE_CHECKING

from retrieval.errors import LoadError
from retrieval.loaders import Document, Loaded

if TYPE_CHECKING:
    from retrieval.config import RetrievalSettings

OLE_MAGIC = b"\xd0\xcf\x11\xe0"


def load(data: bytes, source: str, settings: RetrievalSettings) -> Loaded:
    if data.startswith(OLE_MAGIC):
        raise LoadError(
            "encrypted DOCX (password-protected Office files are OLE containers, not zip archives)"
        )
    check_zip(data, settings, "DOCX")
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
    except (KeyError, ValueError) as exc:
        raise LoadError(f"corrupt DOCX: {exc}") from exc
    doc = Document(source, title=(document.core_properties.title or None))
    path: list[str] = []
    lines: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            lines.append("\n".join(" | ".join(c.text.strip() for c in row.cells) for row in block.rows))
            continue
        level = _heading_level(block.style.name if block.style is not None else "")
        if level:
            doc.add("\n\n".join(lines), " > ".join(path) or None)
            path = path[: level - 1] + [block.text.strip()]
            lines = [block.text.strip()]
        elif block.text.strip():
            lines.append(block.text.strip())
    doc.add("\n\n".join(lines), " > ".join(path) or None)
    doc.title = doc.title or (path[0] if path else None)
    return Loaded([doc])


def check_zip(data: bytes, settings: RetrievalSettings, kind: str) -> None:
    """Refuse archives that are not zip files or would inflate past the configured limits."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise LoadError(f"corrupt {kind}: not a zip archive ({exc})") from exc
    total = xml = 0
    for info in archive.infolist():
        total += info.file_size
        if info.filename.endswith((".xml", ".rels")):
            xml += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > 1_000_000 and ratio > settings.max_compression_ratio:
            raise LoadError(
                f"decompression bomb suspected: {info.filename} inflates {ratio:.0f}x "
                f"(limit retrieval.max_compression_ratio={settings.max_compression_ratio:g})"
            )
    if total > settings.max_uncompressed_mb * 1_000_000:
        raise LoadError(
            f"decompression bomb suspected: inflates to {total / 1e6:.0f} MB "
            f"(limit retrieval.max_uncompressed_mb={settings.max_uncompressed_mb:g})"
        )
    # The XML is parsed into a tree of Python objects (~6x its size in memory, and slow): images are not.
    if xml > settings.max_docx_xml_mb * 1_000_000:
        raise LoadError(
            f"{kind} holds {xml / 1e6:.0f} MB of XML, over retrieval.max_docx_xml_mb={settings.max_docx_xml_mb:g}"
        )


def _heading_level(style: str) -> int:
    if style == "Title":
        return 1
    if style.startswith("Heading "):
        suffix = style.removeprefix("Heading ").strip()
        return int(suffix) if suffix.isdigit() else 0
    return 0
