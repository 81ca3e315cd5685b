"""Follow-up questions for the grounded-QA recipe: the second turn of a conversation, whose question leaves its
subject to the turn before.

A chat's second question rarely names its subject again: after "¿Qué organismo gestiona el complejo
deportivo Los Almendros?" comes "¿Y cuántas calles tiene la piscina cubierta?", after "Who founded the
Greyhaven Line?" comes "What colour were its funnels?". A model trained on one-turn prompts only declines
those, or answers the first question again (docs/benchmarks.md, "Follow-up questions"). This module makes
such follow-ups from question files whose questions do name their subject: the subject is the article's
title, found in the question and taken out by a few rules of each language (:func:`elide`); a question where
no rule applies cleanly is not used. The first turn is another question of the same article that names the
subject, answered as the model should have answered it (``Los Denver Broncos [2].``).

Only the training half of the articles is ever used (the caller passes that subset), so the held-out articles
and the hand-written follow-ups of ``data/followups/`` stay out of training.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from finetune.qa import QAItem, QASet, ascii_fold

_WORD = re.compile(r"\w+(?:[’']s\b)?", re.UNICODE)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# words that may sit inside a title without being part of it in the slug's sense ("Principality of Varnholt")
_JOINERS = {"de", "del", "la", "las", "los", "el", "of", "the", "and", "y", "e"}

# English: words that may follow a subject that is taken out and replaced by "it" (a verb or a preposition
# that starts the rest of the sentence); a noun after it means the title word was a modifier ("the Serrin
# archipelago"), and the question is not used
_EN_AFTER = _words(
    "is was are were be been has had have do does did can could will would should must may in on at "
    "for from with to by during when after before since until first last still ever once originally "
    "usually each every open opens close closes own owns cost costs take takes hold holds offer "
    "offers allow allows require requires cover covers"
)
# Spanish: prepositions before the subject that a rule knows how to drop ("del complejo X", "de X", "en X")
_ES_DROP = {"de", "del"}
_ES_ARTICLES = {"el", "la", "los", "las"}
# Spanish: words before "de X" that need it ("dentro de X"), and prepositions no rule can drop
_ES_NEEDS_DE = _words(
    "dentro fuera cerca lejos antes despues encima debajo delante detras alrededor acerca ademas "
    "junto frente traves"
)
_ES_KEEP = _words(
    "a al con para por sobre entre contra hacia y e o u hasta desde segun tras sin bajo ante durante "
    "mediante como que"
)
# Spanish: words that may follow "allí" (or nothing: "¿Cuántos viven allí?")
_ES_AFTER_ALLI = _words(
    "en por para a al desde hasta durante entre con antes despues hoy cada el la los las del de tras sin "
    "segun"
)
# English: subject, object and possessive of each pronoun (:func:`pronoun_of`)
_PRONOUNS = {"it": ("it", "it", "its"), "he": ("he", "him", "his"), "she": ("she", "her", "her")}
_EN_AUX = _words(
    "is was are were did does do has had have can could will would should must may might when where "
    "why how what who which"
)


def fold(word: str) -> str:
    """Lower case without accents, as the article slugs are written (:func:`finetune.qa.slug`)."""
    return ascii_fold(word).lower()


def title_words(doc: str) -> set[str]:
    """The words of the article a document belongs to: ``normas-visita-museo-lendinez-003.txt`` →
    {normas, visita, museo, lendinez}."""
    stem = re.sub(r"-\d+\.txt$", "", doc)
    return {w for w in stem.lower().split("-") if w}


@dataclass(frozen=True)
class _Span:
    start: int  # first word of the subject (index into the words)
    end: int  # one past the last


def _subject(words: list[re.Match[str]], title: set[str]) -> _Span | None:
    """The one run of words that names the article (every word in its title, or a joiner inside it, at least
    one of them capitalised and not the question's first word); None when there is none or more than one."""
    runs: list[_Span] = []
    i = 0
    while i < len(words):
        if fold(_base(words[i].group())) not in title or fold(words[i].group()) in _JOINERS:
            i += 1
            continue
        j = i
        while j < len(words) and (
            fold(_base(words[j].group())) in title or fold(words[j].group()) in _JOINERS
        ):
            j += 1
        while j > i and fold(words[j - 1].group()) in _JOINERS:  # a run ends on a title word
            j -= 1
        named = any(words[n].group()[:1].isupper() and (n > 0 or j - i > 1) for n in range(i, j))
        if named:
            runs.append(_Span(i, j))
        i = max(j, i + 1)
    return runs[0] if len(runs) == 1 else None


def _base(word: str) -> str:
    return re.sub(r"[’']s$", "", word)


def elide(question: str, doc: str, language: str, pronoun: str = "it") -> str | None:
    """``question`` with its subject (the title of ``doc``'s article) taken out, as a follow-up would ask it,
    or None when the question does not name the subject or no rule applies cleanly.

    English, with ``pronoun`` (it, he or she: what the article calls its subject): "the Greyhaven Line's
    funnels" → "its funnels", "in Port Calloway" → "there", "When did the Greyhaven Line close?" → "When did
    it close?". Spanish: "la piscina del complejo Los Almendros" → "la piscina", "¿Cuándo abre el Museo
    Lendínez?" → "¿Cuándo abre?", "en Castrovélez en 1620" → "allí en 1620"."""
    words = list(_WORD.finditer(question))
    span = _subject(words, title_words(doc))
    if span is None:
        return None
    cut = span.start  # the first word taken out
    folded = [fold(w.group()) for w in words]
    nxt = words[span.end].group() if span.end < len(words) else ""
    after = fold(nxt)
    if nxt[:1].isupper() or nxt[:1].isdigit():
        return None  # the name goes on past the title ("Almendro 2.0", "Super Bowl XXIV")
    if span.start > 1 and words[span.start - 1].group()[:1].isupper():
        return None  # or starts before it ("Amberlow Bank")
    possessive = _base(words[span.end - 1].group()) != words[span.end - 1].group()
    put = ""
    if language == "en":
        subject, obj, its = _PRONOUNS[pronoun]
        if cut > 0 and folded[cut - 1] == "the":
            cut -= 1
        if possessive:
            put = its
        elif after and after not in _EN_AFTER:
            return None  # a title word used as a modifier ("the Serrin archipelago")
        elif cut > 0 and folded[cut - 1] in ("in", "at") and pronoun == "it":
            cut, put = cut - 1, "there"
        else:
            put = subject if cut == 0 or folded[cut - 1] in _EN_AUX else obj
    else:
        if possessive:
            return None
        if cut > 0 and folded[cut - 1] in _ES_ARTICLES:
            cut -= 1
        lead = folded[cut - 1] if cut > 0 else ""
        if lead in _ES_DROP:  # "la piscina del complejo X" -> "la piscina"
            if cut > 1 and folded[cut - 2] in _ES_NEEDS_DE:
                return None
            cut -= 1
        elif lead == "en":
            if after and after not in _ES_AFTER_ALLI and not after[:1].isdigit():
                return None
            cut, put = cut - 1, "allí"
        elif lead in _ES_KEEP:
            return None
        elif after and not (after in _ES_AFTER_ALLI or after in _ES_KEEP or after[:1].isdigit()):
            return None  # "el Parlamento isdrio": the name goes on
    text = question[: words[cut].start()] + put + question[words[span.end - 1].end() :]
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([?,.;:!])", r"\1", text)
    text = re.sub(r"([¿(])\s+", r"\1", text).strip()
    if re.search(
        r"\b(de|del|en|a|al|el|la|los|las|que|y|hasta|desde|of|the|in|at|by|to)\?$", text, re.IGNORECASE
    ):
        return None
    if len(_WORD.findall(text)) < 3:
        return None
    return text[:1].upper() + text[1:] if text[:1].isalpha() else text[:1] + text[1:2].upper() + text[2:]


def pronoun_of(lead: str) -> str:
    """What the first paragraph of an English article calls its subject: "he" or "she" when those pronouns
    outnumber "it" and "its" there (an article about a person), else "it"."""
    words = re.findall(r"[a-z]+", lead.lower())
    he = sum(w in ("he", "his", "him") for w in words)
    she = sum(w in ("she", "her", "hers") for w in words)
    it = sum(w in ("it", "its") for w in words)
    if max(he, she) < 2 or max(he, she) <= it:
        return "it"
    return "he" if he > 2 * she else "she" if she > 2 * he else "it"


def with_and(text: str, language: str, rng: random.Random, names: frozenset[str] = frozenset()) -> str:
    """Half the time, the follow-up opened with "And ..." / "¿Y ...?", as people ask them. Its first word
    goes to lower case unless it is one of ``names`` (:func:`names_in`: "And Carrick confirmed...?")."""
    if rng.random() >= 0.5:
        return text
    if language == "es" and text.startswith("¿") and len(text) > 1:
        return "¿Y " + _lower_first(text[1:], names)
    if language == "en":
        return "And " + _lower_first(text, names)
    return text


def _lower_first(text: str, names: frozenset[str] = frozenset()) -> str:
    word = text.split(" ", 1)[0]
    if word.strip("¿?,.;:!") in names:
        return text
    if len(word) > 1 and word[1:].islower() or len(word) == 1:
        return text[:1].lower() + text[1:]
    return text


def names_in(text: str) -> frozenset[str]:
    """The capitalised words that ``text`` writes so inside a sentence, right after a word or a comma (not at
    a sentence's, a line's or a list item's start): names."""
    return frozenset(
        m.group(1) for m in re.finditer(r"(?<=[\w,;])[ \t]+(\w+)", text) if m.group(1)[:1].isupper()
    )


@dataclass(frozen=True)
class FollowUp:
    first: QAItem  # a question of the same article that names the subject
    second: QAItem  # the question the follow-up asks
    question: str  # the follow-up as asked: ``second`` without its subject


def follow_ups(
    qa: QASet, language_of: Callable[[str], str], seed: int, limit: int | None = None
) -> list[FollowUp]:
    """Pairs of questions of one article: a first question that names the article's subject and a follow-up
    made from another that names it too, with its subject taken out (:func:`elide`) by the rules of the
    article's language (``language_of`` a text: ``en`` or ``es``, the article's questions vote). ``limit``
    pairs at most, drawn with ``seed``; each question is the follow-up of one pair at most."""
    rng = random.Random(f"{seed}:follow-ups")
    by_article: dict[int, list[QAItem]] = {}
    for q in qa.items:
        if q.answerable:
            by_article.setdefault(q.article, []).append(q)
    made: list[FollowUp] = []
    for _article, items in sorted(by_article.items()):
        naming = [q for q in items if _subject(list(_WORD.finditer(q.question)), title_words(q.doc))]
        votes = [language_of(q.question) for q in items]
        language = "es" if votes.count("es") > votes.count("en") else "en"
        docs = sorted({q.doc for q in items})
        pronoun = pronoun_of(qa.contexts[docs[0]]) if language == "en" else "it"
        names = frozenset().union(*(names_in(qa.contexts[d]) for d in docs))
        for q in items:
            text = elide(q.question, q.doc, language, pronoun)
            firsts = [f for f in naming if f.id != q.id and f.doc != q.doc] or [
                f for f in naming if f.id != q.id
            ]
            if text is None or not firsts:
                continue
            made.append(FollowUp(rng.choice(firsts), q, with_and(text, language, rng, names)))
    rng.shuffle(made)
    return made[:limit] if limit else made
