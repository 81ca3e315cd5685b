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
    subject = _header(message, "subject")
    header = [f"Subject: {subject}", f"From: {_header(message, 'from')}", f"Date: {message['date'] or ''}"]
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
    raw = part.get_payload(decode=True) or b""
    content = None
    if charset := part.get_content_charset():
        try:
            content = raw.decode(charset)
        except (LookupError, UnicodeError):  # an unknown or lying charset: read it as any other file
            content = None
    if content is None:  # UTF-8 (stray Latin-1 bytes as cp1252), or the encoding the text's bytes show
        try:
            content = decode(raw)
        except LoadError as exc:
            raise LoadError(f"unreadable e-mail body: {exc}") from exc
    if part.get_content_subtype() == "html":
        from retrieval.loaders.html import html_to_markdown

        content = html_to_markdown(content, max_html_depth)[0]
    return content


def _header(message: EmailMessage, name: str) -> str:
    """A header's text. One written in raw 8-bit bytes (a Latin-1 "Reunión" with no encoded-word, as old
    clients send) is decoded as a file's text would be, where the e-mail parser gives U+FFFD for each byte."""
    for key, raw in message.raw_items():
        if key.lower() == name and any("\udc80" <= c <= "\udcff" for c in raw):
            try:
                return " ".join(decode(raw.encode("utf-8", "surrogateescape")).split())
            except LoadError:
                break
    return " ".join(str(message[name] or "").split())


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
