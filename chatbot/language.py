"""Telling English from Spanish in short texts, for replies the assistant writes itself."""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-záéíóúüñ]+")
_ES = set(
    [
        "el",
        "la",
        "los",
        "las",
        "un",
        "una",
        "de",
        "del",
        "que",
        "qué",
        "en",
        "y",
        "o",
        "por",
        "para",
        "con",
        "sin",
        "cómo",
        "como",
        "cuál",
        "cuándo",
        "cuando",
        "dónde",
        "donde",
        "es",
        "son",
        "está",
        "están",
        "hay",
        "se",
        "su",
        "sus",
        "lo",
        "al",
        "mi",
        "mis",
        "tu",
        "yo",
        "usted",
        "puedo",
        "puede",
        "hacer",
        "tiene",
        "pero",
        "más",
        "muy",
        "también",
        "qué",
        "quién",
        "porque",
        "este",
        "esta",
        "esto",
        "ese",
        "esa",
    ]
)
_EN = set(
    [
        "the",
        "a",
        "an",
        "of",
        "to",
        "in",
        "and",
        "or",
        "for",
        "with",
        "without",
        "how",
        "what",
        "which",
        "when",
        "where",
        "who",
        "is",
        "are",
        "was",
        "were",
        "there",
        "it",
        "its",
        "do",
        "does",
        "can",
        "could",
        "i",
        "you",
        "my",
        "your",
        "this",
        "that",
        "these",
        "those",
        "be",
        "have",
        "has",
        "not",
        "but",
        "more",
        "very",
        "also",
        "why",
    ]
)


def detect_language(text: str, default: str = "en") -> str:
    """'es' or 'en'; ``default`` when the text gives no evidence either way ("horario biblioteca", "necesito
    ayuda": the reader's interface language says more than a guess)."""
    lowered = text.lower()
    if "¿" in lowered or "¡" in lowered or "ñ" in lowered:
        return "es"
    words = _WORD.findall(lowered)
    es = sum(w in _ES for w in words) + sum(ch in "áéíóú" for ch in lowered)
    en = sum(w in _EN for w in words)
    return "es" if es > en else "en" if en > es else default
