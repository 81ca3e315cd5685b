"""E-mail: ``.eml`` messages and ``.mbox`` mailboxes. Subject, sender, date and body; attachments in a
supported format are loaded too, as ``mail.eml/report.pdf`` or ``box.mbox#3/report.pdf``."""

from __future__ import annotations

import email
import email.policy
import re
from email import errors
from email.message import EmailMessage
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from retrieval.errors import LoadError
from retrieval.loaders import Document, Loaded, is_supported, load_bytes
from retrieval.text import decode

if TYPE_CHECKING:
    from retrieval.config import RetrievalSettings

# mbox: a message starts at a "From " line at the start of the file or after a newline.
_MBOX_SPLIT = re.compile(rb"(?:^|\r?\n)From [^\n]*\n")


def load(data: bytes, source: str, settings: RetrievalSettings) -> Loaded:
    if PurePosixPath(source).suffix.lower() == ".eml":
        return load_message(data, source, settings)
    if not data.startswith(b"From "):
        raise LoadError("not an mbox mailbox (it must start with a 'From ' line)")
    loaded = Loaded()
    for number, raw in enumerate((m for m in _MBOX_SPLIT.split(data) if m.strip()), start=1):
        try:  # mbox writers escape body lines starting with "From " as ">From "
            part = load_message(raw.replace(b"\n>From ", b"\nFrom "), f"{source}#{number}", settings)
        except LoadError as exc:
            loaded.failures[f"{source}#{number}"] = str(exc)
            continue
        loaded.documents += part.documents
        loaded.failures.update(part.failures)
    return loaded


def load_message(data: bytes, source: str, settings: RetrievalSettings) -> Loaded:
    message = email.message_from_bytes(data, policy=email.policy.default)
    if not isinstance(message, EmailMessage) or not (message["subject"] or message["from"]):
        raise LoadError("not an e-mail message (no Subject or From header)")
    subject = str(message["subject"] or "").strip()
    header = [f"Subject: {subject}", f"From: {message['from'] or ''}", f"Date: {message['date'] or ''}"]
    doc = Document(source, title=subject or None)
    doc.add("\n".join(header) + "\n\n" + _body(message, settings.max_html_depth), title=subject or None)
    loaded = Loaded([doc])
    for attachment in message.iter_attachments():
        name = attachment.get_filename()
        if not name or not is_supported(name):
            continue
        sub = f"{source}/{PurePosixPath(name).name}"
        try:
            part = load_bytes(attachment.get_payload(decode=True) or b"", sub, settings)
        except LoadError as exc:
            loaded.failures[sub] = str(exc)
            continue
        loaded.documents += part.documents
        loaded.failures.update(part.failures)
    return loaded


def _body(message: EmailMessage, max_html_depth: int) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return _unsplit_multipart(message)
    try:
        content = part.get_content()
    except (LookupError, UnicodeError) as exc:  # unknown or lying charset
        raise LoadError(f"unreadable e-mail body: {exc}") from exc
    if part.get_content_subtype() == "html":
        from retrieval.loaders.html import html_to_markdown

        content = html_to_markdown(content, max_html_depth)[0]
    return content


def _unsplit_multipart(message: EmailMessage) -> str:
    """The raw text of a multipart message whose parts cannot be told apart (its Content-Type names no
    boundary), part headers and all; "" for any other message without a body (only attachments).
    get_body() finds no part in it, and its text was dropped while the file counted as indexed."""
    if not any(isinstance(d, errors.NoBoundaryInMultipartDefect) for d in message.defects):
        return ""
    payload = message.get_payload()
    if not isinstance(payload, str):
        return ""
    return decode(payload.encode("utf-8", "surrogateescape"))
