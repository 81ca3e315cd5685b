"""Words that say nothing of a text's subject, and the crude stems that compare the rest, in English and Spanish.

Keyword search leaves the function words out of its query (on a small collection of questions and answers,
"How do I ... a collection?" otherwise matches the FAQ entry phrased that way over the passage that answers),
and the chat's relevance gate counts how many of a question's content words its passages hold (:func:`word_coverage`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# fmt: off
FUNCTION_WORDS = frozenset({
    "a", "about", "after", "also", "an", "and", "are", "be", "been", "before", "being", "between", "but",
    "can", "could", "do", "does", "each", "for", "from", "has", "have", "how", "i", "in", "into", "is", "it",
    "its", "many", "more", "most", "much", "my", "not", "of", "only", "or", "other", "over", "should", "some",
    "such", "than", "that", "the", "their", "them", "then", "there", "these", "they", "this", "those", "to",
    "very", "was", "were", "what", "when", "where", "which", "while", "who", "whom", "whose", "why", "will",
    "with", "without", "would", "you", "your",
    "al", "cada", "como", "con", "cual", "cuando", "cuál", "cuáles", "cuándo", "cómo", "de", "del", "desde",
    "donde", "durante", "dónde", "el", "en", "entre", "es", "esa", "ese", "esta", "estas", "este", "esto",
    "estos", "está", "están", "fueron", "hace", "hacer", "hasta", "hay", "la", "las", "lo", "los", "mi", "mis",
    "muy", "más", "o", "otra", "otras", "otro", "otros", "para", "pero", "por", "porque", "puede", "pueden",
    "puedo", "que", "quien", "quién", "quiénes", "qué", "se", "según", "sin", "sobre", "son", "su", "sus",
    "también", "tiene", "tienen", "toda", "todas", "todo", "todos", "tu", "un", "una", "usted", "y", "yo",
})
# fmt: on

_WORD = re.compile(r"\w+")


def content_words(text: str) -> set[str]:
    """The words of ``text`` that can say what it is about: four letters or more, not a function word."""
    return {w for w in _WORD.findall(text.lower()) if len(w) >= 4 and w not in FUNCTION_WORDS}


def stem(word: str) -> str:
    """``word`` cut to five letters: a crude stem that joins singular and plural and the forms of a verb, in
    English and Spanish alike."""
    return word[:5]


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
    same stem (:func:`stem`), or, for a word of five letters or more, a word one typo away."""
    asked = {stem(w): w for w in content_words(question)}
    if not asked:
        return 1.0
    have = set().union(*map(content_words, passages))
    prefixes = {stem(w) for w in have}

    def found(cut: str, word: str) -> bool:
        return cut in prefixes or (len(word) >= 5 and any(one_edit(word, other) for other in have))

    return sum(found(cut, word) for cut, word in asked.items()) / len(asked)
