"""Words that say nothing of a text's subject, and the crude stems that compare the rest, in English and Spanish.

Keyword search leaves the function words out of its query (on a small collection of questions and answers,
"How do I ... a collection?" otherwise matches the FAQ entry phrased that way over the passage that answers),
and the chat's relevance gate counts how many of a question's content words its passages hold (:func:`word_coverage`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from functools import lru_cache

import snowballstemmer

# fmt: off
FUNCTION_WORDS = frozenset({
    "a", "about", "after", "also", "an", "and", "are", "be", "been", "before", "being", "between", "but",
    "can", "could", "do", "does", "each", "for", "from", "has", "have", "how", "i", "in", "into", "is", "it",
    "its", "many", "might", "more", "most", "much", "must", "my", "not", "of", "only", "or", "other", "over",
    "shall", "should", "some", "such", "than", "that", "the", "their", "them", "then", "there", "these",
    "they", "this", "those", "to", "very", "was", "were", "what", "when", "where", "which", "while", "who",
    "whom", "whose", "why", "will", "with", "without", "would", "you", "your",
    "al", "cada", "como", "con", "cual", "cuales", "cuando", "cuanta", "cuantas", "cuanto", "cuantos", "cuál",
    "cuáles", "cuándo", "cuánta", "cuántas", "cuánto", "cuántos", "cómo", "de", "debe", "deben", "debo",
    "del", "desde", "donde", "durante", "dónde", "el", "en", "entre", "es", "esa", "ese", "esta", "estas",
    "este", "esto", "estos", "está", "están", "fueron", "hace", "hacer", "hago", "hasta", "hay", "la", "las",
    "lo", "los", "mi", "mis", "muy", "más", "o", "otra", "otras", "otro", "otros", "para", "pero", "por",
    "porque", "puede", "pueden", "puedo", "que", "quien", "quienes", "quién", "quiénes", "qué", "se", "según",
    "sin", "sobre", "son", "su", "sus", "también", "tengo", "tiene", "tienen", "toda", "todas", "todo",
    "todos", "tu", "un", "una", "usted", "y", "yo",
})
# fmt: on

_WORD = re.compile(r"\w+")


def content_words(text: str) -> set[str]:
    """The words of ``text`` that can say what it is about, lower-cased: four letters or more and not a
    function word, and the short names that say it as well (:func:`short_names`)."""
    long = {w for w in _WORD.findall(text.lower()) if len(w) >= 4 and w not in FUNCTION_WORDS}
    return long | short_names(text)


def short_names(text: str) -> set[str]:
    """The words of two or three characters that name something, lower-cased: an acronym written in
    capitals ("GPU", "PDF", "CLI") or a number or code with a digit ("50", "v2", the "540" of "MX-540").
    Dropped by length, they would leave "¿Hace falta una GPU?" with "falta" as its only word."""
    shouted = text.isupper()  # a text all in capitals marks no word out
    return {
        w.lower()
        for w in _WORD.findall(text)
        if 2 <= len(w) <= 3
        and ((w.isupper() and not shouted) or any(c.isdigit() for c in w))
        and w.lower() not in FUNCTION_WORDS
    }


def stem(word: str) -> str:
    """``word`` cut to five letters: a crude stem that joins singular and plural and the forms of a verb, in
    English and Spanish alike."""
    return word[:5]


_STEMMERS = (snowballstemmer.stemmer("spanish"), snowballstemmer.stemmer("english"))
_STEMMING = threading.Lock()  # a Snowball stemmer keeps state between calls


@lru_cache(maxsize=65536)
def search_stem(word: str) -> str | None:
    """The stem keyword search matches ``word`` by, as a prefix of the indexed words: the shorter of its
    Spanish and English Snowball stems that keeps four letters or more ("archivos" → "archiv", finding
    "archivo" and "archivar"; "files" → "file"), or None for a word to match as it is (a short word, a
    number, a code; a stem that would match too much: "casa" → "cas"). Lower case in, lower case out."""
    if len(word) < 4 or not word.isalpha():
        return None
    with _STEMMING:
        found = [s.stemWord(word) for s in _STEMMERS]
    found = [s for s in found if len(s) >= 4]
    return min(found, key=len) if found else None


def one_edit(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` differ by at most one letter inserted, deleted or replaced (a typo)."""
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i + 1 :] == b[i + 1 :] if len(a) == len(b) else a[i:] == b[i + 1 :]


def word_coverage(question: str, passages: Sequence[str]) -> float:
    """Share of ``question``'s content words that ``passages`` contain (1.0 for a question with none): the
    same stem (:func:`stem`), or, for a word of five letters or more, a word one typo away. A short name
    (:func:`short_names`) and a number must be found as they are, in any case ("gpu" finds "GPU"; "541" does
    not find "540")."""
    asked = {stem(w): w for w in content_words(question)}
    if not asked:
        return 1.0
    have = set().union(*map(content_words, passages))
    prefixes = {stem(w) for w in have}
    short = {w for p in passages for w in _WORD.findall(p.lower()) if 2 <= len(w) <= 3}

    def found(cut: str, word: str) -> bool:
        if len(word) <= 3:
            return word in short
        if any(c.isdigit() for c in word):  # a number or a code: no stem, no typo
            return word in have
        return cut in prefixes or (len(word) >= 5 and any(one_edit(word, other) for other in have))

    return sum(found(cut, word) for cut, word in asked.items()) / len(asked)


# fmt: off
# English questions that open with one of these ask for a yes or a no ("Can I index PDF files?")
_YES_NO_OPENERS = frozenset({
    "am", "are", "can", "could", "did", "do", "does", "has", "have", "is", "may", "might", "must", "shall",
    "should", "was", "were", "will", "would", "aren't", "can't", "didn't", "doesn't", "don't", "isn't",
    "wasn't", "won't",
})
# words that answer a yes/no question by themselves
POLARITY_WORDS = frozenset({
    "yes", "no", "not", "never", "none", "nothing", "cannot", "sí", "nunca", "jamás", "nada", "ninguno",
    "ninguna", "tampoco",
})
# fmt: on
# words that ask for something other than a yes or a no: those written with their accent, or without it
# where they cannot join clauses; "que", "como", "donde" and "cuando" without one join clauses inside a
# yes/no question ("¿Hace falta que instale algo?", "¿Se reindexa cuando cambio un archivo?") and ask only
# at its start
_ASKING = re.compile(
    r"\b(what|which|who|whom|whose|where|when|why|how|qué|cuál|cuáles|quién|quiénes|cómo|dónde|adónde|"
    r"cuándo|cuánto|cuánta|cuántos|cuántas|cuán|cual|cuales|quien|quienes)\b",
    re.IGNORECASE,
)
_ASKING_FIRST = frozenset({"que", "como", "donde", "cuando", "cuanto", "cuanta", "cuantos", "cuantas"})
_OR = re.compile(r"\b(or|o|u)\b")  # lower case: the "O" of "I/O" or the "U" of "U.S." is no "or"


def yes_no_question(question: str) -> bool:
    """Whether ``question`` asks for a yes or a no: in English, one that opens with an auxiliary verb ("Does
    the assistant need a GPU?"); in either language, one that ends with a question mark and has no question
    word ("¿Hace falta una GPU?", "se pueden indexar PDF?"). A choice ("Is it 0-based or 1-based?", "¿Es
    pro-vida o pro-elección?") is not one: its answer is one of its own words."""
    text = question.strip().lstrip("¿¡\"'").strip()
    words = text.split()
    if not words or _OR.search(text) or _ASKING.search(text):
        return False
    first = words[0].lower().strip(",")
    return first in _YES_NO_OPENERS or (question.rstrip().endswith("?") and first not in _ASKING_FIRST)
