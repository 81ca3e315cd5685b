"""The grounded-QA recipe: retrieval-augmented fine-tuning (RAFT, Zhang et al. 2024) on question-answer files.

    chatbot train --recipe grounded-qa --qa squad-es.json --split train --qa data/qa/sample-en.json ...

Each question becomes one chat example built with the chat chain's own prompt code (the caller passes it in
as a :class:`PromptStyle`, so this package needs nothing from ``chatbot``): the system prompt, ``k`` numbered
sources and the question. The sources are the question's gold passage at a random position among
distractors that the project's own search retrieves for the question, so the model learns to pick the
passage that answers among the kind of near misses it will really be shown. The target is short: the
reference answer followed by the gold source's number (``Los Denver Broncos [2].``). In a share of the
examples (``negative_share``, and every unanswerable SQuAD v2.0 question) the gold passage is left out and
the target is the abstention sentence in the question's language. The loss falls on the answer tokens only
(``finetune.data.encode_chat``). With ``follow_ups``, two-turn examples are added whose second question
leaves its subject to the first (:func:`make_follow_up_examples`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from finetune.data import Item, content_key
from finetune.followups import follow_ups
from finetune.qa import QAItem, QASet, contains_answer
from retrieval.types import Hit

Search = Callable[[str, int], list[Hit]]


def as_written(answer: str, sources: Sequence[str]) -> str:
    """An answer as the model wrote it (a :class:`PromptStyle` that does not say how the chat shows answers)."""
    return answer


@dataclass(frozen=True)
class PromptStyle:
    """How the chat chain shows sources to the model, how it declines, and how it shows an answer."""

    # (role, content): system prompt, the conversation so far (``history``, oldest first), user turn
    messages: Callable[[str, Sequence[Hit], Sequence[tuple[str, str]]], list[tuple[str, str]]]
    abstain: Callable[[str], str]  # the abstention sentence in the question's language
    # an answer as the chat shows and stores it, given the model's text and the sources it was shown
    # (``por orden de llegada [2].`` → ``Por orden de llegada [2].``): an earlier turn in a two-turn example
    # is what the conversation holds
    shown: Callable[[str, Sequence[str]], str] = as_written


@dataclass(frozen=True)
class RecipeOptions:
    k: int = 3  # sources per example: the chat's default top_k, so training sees what the chat shows
    negative_share: float = 0.2  # examples whose gold passage is removed (target: the abstention sentence)
    pool: int = 12  # search depth from which distractors are taken (the best-ranked non-gold hits)
    seed: int = 42
    # examples per question, each with its own draw of the gold position and of whether the gold passage is
    # removed: several epochs' worth of data that never shows the model the same arrangement twice
    variants: int = 1
    # two-turn examples per file at most, whose follow-up leaves its subject to the first question
    # (:func:`make_follow_up_examples`); 0: none
    follow_ups: int = 0
    only_follow_ups: bool = False  # the two-turn examples alone (to add the skill to a trained version)
    # for this share of the follow-up examples, one more: the same first turn, then a question of another
    # article (off-topic for the conversation), shown without any passage that answers it; target: the
    # abstention sentence
    off_topic_share: float = 0.0


def answer_target(answer: str, number: int) -> str:
    """``Los Denver Broncos [2].``: the reference answer as the passage writes it, its source's number, a full
    stop. Its case is kept: a quote that starts a command or a path (``make run``, ``var/``) is wrong with a
    capital."""
    text = answer.strip().rstrip(".")
    return f"{text} [{number}]."


def gold_hit(qa: QASet, doc: str, answers: list[str], found: Sequence[Hit]) -> Hit:
    """The chunk of ``doc`` that holds the answer as the search returned it; the whole paragraph when the
    search did not return it (or the question is unanswerable)."""
    for hit in found:
        if hit.source == doc and (not answers or contains_answer(hit.text, answers)):
            return hit
    return Hit(-1, qa.contexts[doc], doc, 0.0)


def make_examples(
    qa: QASet, search: Search, style: PromptStyle, options: RecipeOptions, origin: str
) -> list[Item]:
    """``options.variants`` chat examples per question of ``qa``; ``origin`` names the file in each item's
    source. The search runs once per question."""
    searched: dict[str, list[Hit]] = {}
    items = []
    for variant in range(options.variants):
        rng = random.Random(f"{options.seed}:{origin}" + (f":{variant}" if variant else ""))
        tag = f":v{variant}" if variant else ""
        for q in qa.items:
            if q.id not in searched:
                searched[q.id] = search(q.question, options.pool)
            pairs, kind = _example(q, qa, searched[q.id], style, options, rng)
            key = content_key("chat", pairs)
            items.append(Item("chat", f"{origin}:{q.id}:{kind}{tag}", key, messages=pairs))
    return items


def _example(
    q: QAItem,
    qa: QASet,
    found: list[Hit],
    style: PromptStyle,
    options: RecipeOptions,
    rng: random.Random,
    history: Sequence[tuple[str, str]] = (),
) -> tuple[tuple[tuple[str, str], ...], str]:
    others = [h for h in found if h.source != q.doc]
    negative = not q.answerable or rng.random() < options.negative_share
    if not q.answerable:  # SQuAD v2.0: the paragraph is shown, it just does not answer the question
        shown = others[: options.k - 1]
        shown.insert(rng.randrange(len(shown) + 1), gold_hit(qa, q.doc, [], found))
        target = style.abstain(q.question)
    elif negative:
        # a passage elsewhere that holds the answer would make "not in the documents" false
        shown = [h for h in others if not contains_answer(h.text, q.answers)][: options.k]
        target = style.abstain(q.question)
    else:
        shown = others[: options.k - 1]
        position = rng.randrange(len(shown) + 1)
        shown.insert(position, gold_hit(qa, q.doc, q.answers, found))
        target = answer_target(q.answers[0], position + 1)
    pairs = (*style.messages(q.question, shown, history), ("assistant", target))
    return pairs, "negative" if negative else "positive"


def make_follow_up_examples(
    qa: QASet,
    search: Search,
    style: PromptStyle,
    options: RecipeOptions,
    origin: str,
    language_of: Callable[[str], str],
) -> list[Item]:
    """Up to ``options.follow_ups`` two-turn examples from ``qa`` (:mod:`finetune.followups`; ``language_of``
    tells an article's language from its questions): the first question and the answer the model should give
    it (its gold passage cited at a random position), then the follow-up, which leaves its subject to the
    first question, shown with the passages the chat would retrieve for it (the first question and the
    follow-up together, the chain's ``concat`` search query). Its target is built as for a first question:
    the answer citing the gold passage, or, in ``options.negative_share`` of the examples, the gold passage
    left out and the abstention sentence. With ``options.off_topic_share``, some first turns are followed a
    second time by a question of another article, which the passages shown do not answer: the abstention
    sentence (a conversation's off-topic follow-up, which same-article negatives never show)."""
    rng = random.Random(f"{options.seed}:{origin}:follow-ups")
    items = []
    made: list[tuple[QAItem, tuple[tuple[str, str], ...]]] = []  # each example's first question and turn
    for pair in follow_ups(qa, language_of, options.seed, options.follow_ups):
        first_target = answer_target(pair.first.answers[0], rng.randrange(options.k) + 1)
        # the first answer as the conversation holds it: capitalised as the chat shows it, code kept as code
        first_answer = style.shown(first_target, [qa.contexts[pair.first.doc]])
        history = (("user", pair.first.question), ("assistant", first_answer))
        asked = QAItem(
            pair.second.id, pair.question, pair.second.answers, pair.second.doc, pair.second.article
        )
        found = search(f"{pair.first.question} {pair.question}", options.pool)
        pairs, kind = _example(asked, qa, found, style, options, rng, history)
        key = content_key("chat", pairs)
        items.append(Item("chat", f"{origin}:{pair.second.id}:follow-up-{kind}", key, messages=pairs))
        made.append((pair.first, history))
    # off-topic follow-ups: drawn with their own generator, so that a share of 0 changes nothing above
    other = random.Random(f"{options.seed}:{origin}:off-topic")
    answerable = [q for q in qa.items if q.answerable]
    for first, history in made[: round(options.off_topic_share * len(made))]:
        elsewhere = [q for q in answerable if q.article != first.article]
        if not elsewhere:
            break
        q = other.choice(elsewhere)
        found = search(f"{first.question} {q.question}", options.pool)
        shown = [h for h in found if h.source != q.doc and not contains_answer(h.text, q.answers)]
        pairs = (
            *style.messages(q.question, shown[: options.k], history),
            ("assistant", style.abstain(q.question)),
        )
        key = content_key("chat", pairs)
        items.append(Item("chat", f"{origin}:{first.id}+{q.id}:follow-up-off-topic", key, messages=pairs))
    return items
