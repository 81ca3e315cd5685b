"""Text hygiene at ingestion: decoding bytes with a detected encoding, stripping invisible characters."""

from __future__ import annotations

import re
import unicodedata

from retrieval.errors import LoadError

# Zero-width and joiner characters, word joiner, BOM, bidi embeddings/overrides/isolates and marks, the
# Arabic letter mark, soft hyphen, and the Unicode "tag" block (U+E0000-E007F, which hides text from readers).
_INVISIBLE = re.compile(
    "[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\U000e0000-\U000e007f]"
)
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BOMS = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)
PREFERRED_ENCODINGS = ("cp1252", "latin_1", "iso8859_15")
# Bytes that are not UTF-8, as ``surrogateescape`` decodes them; and non-ASCII characters, decoded or not.
_STRAY_BYTES = re.compile("[\udc80-\udcff]+")
_NON_ASCII = re.compile("[^\x00-\x7f]")
# Text is taken as UTF-8 with stray bytes when 80% of its non-ASCII characters decode: 40 accented letters
# and 1 stray byte pass; a Latin-1 file (no multi-byte sequences) or GBK (~10% decode by chance) do not.
UTF8_SHARE = 0.8
# Texts shorter than this (in bytes) that are not UTF-8 are read as Windows-1252 when that gives letters.
SHORT_TEXT = 200
# A decoded "text" with more than 5% control characters is a binary file that happened to decode.
MAX_CONTROL_SHARE = 0.05


def clean(text: str) -> str:
    """NFC-normalise, unify newlines, drop invisible and control characters (keeping tab and newline)."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    return _CONTROL.sub("", _INVISIBLE.sub("", text))


def decode(data: bytes) -> str:
    """Decode ``data`` with its BOM, as UTF-8 (with a few stray bytes read as cp1252), or with the encoding
    charset-normalizer detects.

    Raises :class:`LoadError` for binary content; nothing is decoded with ``errors="ignore"``.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return _strict(data[len(bom) :], encoding)
    if b"\x00" in data[:8192]:
        encoding = _utf16_without_bom(data)
        if encoding is None:
            raise LoadError("binary content, not text (NUL bytes)")
        return _strict(data, encoding)
    try:
        return _checked(data.decode("utf-8", errors="strict"), "utf-8")
    except UnicodeDecodeError:
        pass
    text = data.decode("utf-8", errors="surrogateescape")
    if _mostly_utf8(text):
        return _checked(_STRAY_BYTES.sub(_as_cp1252, text), "utf-8")
    if len(data) < SHORT_TEXT and (western := _plain_western(data)) is not None:
        return western
    from charset_normalizer import from_bytes

    matches = list(from_bytes(data))
    if not matches:
        raise LoadError("binary content, not text (no text encoding fits)")
    best = matches[0]
    # Short texts fit several single-byte code pages equally well (cp1250 vs cp1252 differ in a few letters);
    # among equally plausible guesses, the Western European ones win: this is a Spanish/English deployment.
    ties = [m for m in matches if m.chaos <= best.chaos + 0.01 and m.coherence >= best.coherence - 0.01]
    for preferred in PREFERRED_ENCODINGS:
        if any(m.encoding == preferred for m in ties):
            return _strict(data, preferred)
    return _checked(str(best), best.encoding)


def _plain_western(data: bytes) -> str | None:
    """``data`` as Windows-1252 when every non-ASCII character it gives is a letter or Spanish punctuation
    ("año", "León", "¿Qué?"): a short text gives a detector too little to go on ("León" came out as Chinese),
    and this is a Spanish/English deployment. None when it does not read so."""
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        return None
    odd = (c for c in text if ord(c) > 127 and not unicodedata.category(c).startswith("L"))
    if any(c not in "¿¡«»ºª°€" for c in odd):
        return None
    # accented letters are a few of a Latin-script text's letters; read this way, Cyrillic (cp1251) or Greek
    # (cp1253) bytes would be nearly all of them ("Ïðèâåò"): those are left to the detector
    letters = [c for c in text if c.isalpha()]
    accented = sum(1 for c in letters if ord(c) > 127)
    return _checked(text, "cp1252") if accented <= 0.5 * len(letters) else None


def _mostly_utf8(text: str) -> bool:
    """Whether ``text`` (decoded with ``surrogateescape``) is UTF-8 with a few stray bytes: at least
    ``UTF8_SHARE`` of its non-ASCII characters decoded. Guessing an encoding for the whole file instead
    read Spanish UTF-8 with one Latin-1 "é" as a Thai code page ("cafeterรญa"). A file wholly in Latin-1,
    Cyrillic cp1251 or GBK decodes few or no multi-byte UTF-8 sequences, so it is still detected."""
    stray = sum(len(run) for run in _STRAY_BYTES.findall(text))
    decoded = len(_NON_ASCII.findall(text)) - stray
    return decoded >= UTF8_SHARE * (decoded + stray)


def _as_cp1252(match: re.Match[str]) -> str:
    """Stray bytes in UTF-8 text read as Windows-1252 (usually a Latin-1 word pasted in: "Jos\xe9" is
    "José"); U+FFFD for the five bytes cp1252 leaves undefined."""
    return match.group().encode("utf-8", "surrogateescape").decode("cp1252", errors="replace")


def _utf16_without_bom(data: bytes) -> str | None:
    """UTF-16 without a BOM: Latin-script text has a NUL in every other byte (odd bytes for little-endian)."""
    sample = data[:4096]
    if len(sample) < 4 or len(data) % 2:
        return None
    even, odd = sample[0::2], sample[1::2]
    if odd.count(0) > 0.4 * len(odd) and even.count(0) == 0:
        return "utf-16-le"
    if even.count(0) > 0.4 * len(even) and odd.count(0) == 0:
        return "utf-16-be"
    return None


def _strict(data: bytes, encoding: str) -> str:
    try:
        return _checked(data.decode(encoding, errors="strict"), encoding)
    except UnicodeDecodeError as exc:
        raise LoadError(f"not valid {encoding} text at byte {exc.start}") from exc


def _checked(text: str, encoding: str) -> str:
    if text and len(_CONTROL.findall(text[:100_000])) > MAX_CONTROL_SHARE * min(len(text), 100_000):
        raise LoadError(f"binary content, not text (control characters after decoding as {encoding})")
    return text
