"""PDF: text per page (1-based page numbers); encrypted, corrupt and bomb-like files are reported."""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING

from retrieval.errors import LoadError
from retrieval.loaders import Document, Loaded

if TYPE_CHECKING:
    from retrieval.config import RetrievalSettings

log = logging.getLogger(__name__)


def load(data: bytes, source: str, settings: RetrievalSettings) -> Loaded:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, LimitReachedError, PdfReadError

    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise LoadError("corrupt PDF: no %PDF header")
    # pypdf itself caps how far one stream may inflate (ZLIB_MAX_OUTPUT_LENGTH etc.) and raises
    # LimitReachedError beyond it; that is the decompression-bomb case here.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not _opens_without_password(reader):
            raise LoadError("encrypted PDF (a password is required)")
        doc = Document(source, title=_title(reader))
        for number, page in enumerate(reader.pages, start=1):
            doc.add(page.extract_text() or "", title=doc.title, page=number)
    except LimitReachedError as exc:
        raise LoadError(f"decompression bomb suspected: {exc}") from exc
    except FileNotDecryptedError as exc:
        raise LoadError("encrypted PDF (a password is required)") from exc
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise LoadError(f"corrupt PDF: {exc}") from exc
    return Loaded([doc])


def _opens_without_password(reader) -> bool:
    """Owner-password-only PDFs (printing/copying restricted) open with the empty user password."""
    try:
        return bool(reader.decrypt(""))
    except Exception:  # missing AES backend or a malformed encryption dictionary
        return False


def _title(reader) -> str | None:
    try:
        title = reader.metadata.title if reader.metadata else None
    except Exception:
        return None
    return str(title).strip() or None if title else None
