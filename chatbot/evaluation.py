"""The RAG evaluation harness: retrieval, answers, citations, abstention and speed, through the real chain.

Input is a SQuAD v1.1/v2.0 file (read by :mod:`finetune.qa`, which the grounded-QA recipe shares). Every
context becomes one document of the evaluated collection (written under ``<data_dir>/eval/<name>/`` and
synced when the collection does not exist yet). Each question is asked in a fresh conversation.

Two ways to ask (``modes``):
- ``present``: the collection as it is. Scored: exact match, token F1 and "answer contained" of the answer
  text (citation markers removed: they are scored on their own), citation accuracy (of the answers given,
  the share whose cited sources hold a reference answer; an answer citing nothing counts as wrong), and
  wrong abstention (declining although retrieval found the answer's paragraph or not).
- ``absent``: the same question with its own paragraph taken out of every search, as if the collection
  did not hold it; the right reply is the abstention sentence. Scored: abstention rate.

Answer normalisation is SQuAD's (lower case, no punctuation, no articles, single spaces), with the Spanish
articles added to the English ones.
"""

from __future__ import annotations

import re
import statistics
import string
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatbot.citations import cited_numbers, clean_markers
from chatbot.prompt import is_abstention
from chatbot.service import ChatService
from finetune.qa import QAFileError, QAItem, QASet, contains_answer, load_squad, slug, spread
from retrieval.types import Hit

if TYPE_CHECKING:
    from retrieval.collection import Collection

__all__ = ["QAFileError", "QAItem", "QASet", "load_squad", "spread", "slug"]
MODES = ("present", "absent")

K_VALUES = (1, 5, 10)
_ARTICLES = re.compile(r"\b(a|an|the|el|la|los|las|un|una|unos|unas)\b")
_PUNCT = set(string.punctuation) | set("¿¡«»“”‘’")


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def strip_citations(text: str) -> str:
    """The answer without its ``[n]`` markers (they are scored as citations, not as answer words)."""
    return " ".join(clean_markers(text, 0).split())


def answer_contained(prediction: str, answers: Iterable[str]) -> float:
    pred = f" {normalize_answer(prediction)} "
    return float(any(f" {normalize_answer(a)} " in pred for a in answers if normalize_answer(a)))


def exact_match(prediction: str, answers: Iterable[str]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(a) for a in answers))


def token_f1(prediction: str, answers: Iterable[str]) -> float:
    def f1(gold: str) -> float:
        pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
        common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(pred_tokens), common / len(gold_tokens)
        return 2 * precision * recall / (precision + recall)

    return max(f1(a) for a in answers)


def answer_rank(chunks: list[str], answers: list[str]) -> int | None:
    """1-based rank of the first chunk that contains an answer text (case and spacing ignored)."""
    wanted = [" ".join(a.lower().split()) for a in answers if a.strip()]
    for rank, chunk in enumerate(chunks, 1):
        text = " ".join(chunk.lower().split())
        if any(w in text for w in wanted):
            return rank
    return None


def ensure_collection(service: ChatService, name: str, qa: QASet) -> bool:
    """Index the contexts into ``name`` if that collection does not exist; True if it was built now."""
    from chatbot.recipes import qa_collection
    from retrieval.collection import Collection

    if name in Collection.list(service.settings):
        return False
    qa_collection(service.settings, name, qa, under="eval")
    return True


def excluding(collection: Collection, doc: str) -> Callable[[str, int], list[Hit]]:
    """``collection``'s search as if it did not hold document ``doc``: its chunks are no candidates, so they
    neither take a place nor set the scale of the fused scores. (Dropping them from the results instead
    would leave the others' scores as they were beside the missing paragraph, and on squad-es would show the
    model other passages for about one question in four.)"""

    def without(query: str, k: int) -> list[Hit]:
        return collection.search(query, k, without=[doc])

    return without


def evaluate_rag(
    service: ChatService,
    collection: str,
    items: list[QAItem],
    generate: bool = True,
    progress: Callable[[int, int], None] | None = None,
    modes: Iterable[str] = ("present",),
    per_answer: bool = False,
) -> dict[str, Any]:
    """Score retrieval (and, with ``generate``, answers in each of ``modes``) on ``items``; the report (with
    ``per_answer``, also each answer's mode, hesitation, whether it declined, and F1 under ``answers``)."""
    from retrieval.collection import Collection

    modes = [m for m in MODES if m in set(modes)]
    col = Collection.open(service.settings, collection)
    ranks: list[int | None] = []
    scores: dict[str, list[float]] = {}
    ttft, answer_tokens = [], []
    # each answer's mode, the model's hesitation, whether it declined, and its F1 (None when absent): what
    # chat.unsure_hesitation is chosen from
    answers: list[tuple[str, float | None, bool, float | None]] = []
    decoded_tokens, decode_seconds = 0, 0.0
    started = time.perf_counter()

    def add(metric: str, value: float) -> None:
        scores.setdefault(metric, []).append(value)

    for i, item in enumerate(items):
        hits = col.search(item.question, max(K_VALUES))
        ranks.append(answer_rank([h.text for h in hits], item.answers))
        for mode in modes if generate else ():
            search = excluding(col, item.doc) if mode == "absent" else None
            answer = service.answer(item.question, collection=collection, remember=False, search=search)
            declined = answer.abstained or is_abstention(answer.text)
            f1 = None
            if mode == "absent" or not item.answerable:
                add("abstain_when_absent", float(declined))
                add("abstain_or_unsure_when_absent", float(declined or answer.unsure))
            else:
                text = strip_citations(answer.text)
                f1 = token_f1(text, item.answers)
                add("exact_match", exact_match(text, item.answers))
                add("f1", f1)
                add("answer_contained", answer_contained(text, item.answers))
                add("abstain_when_present", float(declined))
                add("abstain_or_unsure_when_present", float(declined or answer.unsure))
                if not declined:
                    add("citation_accuracy", citation_correct(answer.text, answer.sources, item.answers))
                    # (a source has a quote only when it is cited)
                    add("quote_located", float(any(s.quote for s in answer.sources)))
                    add("f1_unsure" if answer.unsure else "f1_sure", f1)
            answers.append((mode if item.answerable else "absent", answer.hesitation, declined, f1))
            if answer.seconds_to_first_token is not None:
                ttft.append(answer.seconds_to_first_token)
            if not answer.abstained:
                answer_tokens.append(answer.completion_tokens)
            if answer.seconds_generating and answer.completion_tokens > 1:
                decoded_tokens += answer.completion_tokens - 1
                decode_seconds += answer.seconds_generating
        if progress:
            progress(i + 1, len(items))
    n = len(items)
    report: dict[str, Any] = {
        "questions": n,
        "collection": collection,
        **{f"hit@{k}": sum(r is not None and r <= k for r in ranks) / n for k in K_VALUES},
        "mrr@10": sum(1 / r for r in ranks if r) / n,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if generate:
        report.update({metric: statistics.fmean(values) for metric, values in scores.items()})
        report.update(
            modes=modes,
            abstention_rate=report.get("abstain_when_present", 0.0),
            tokens_per_answer=statistics.fmean(answer_tokens) if answer_tokens else None,
            ttft_p50_s=statistics.median(ttft) if ttft else None,
            ttft_mean_s=statistics.fmean(ttft) if ttft else None,
            # all decoded tokens over all decoding time: a mean of per-answer rates would let one-word
            # answers (whose few tokens arrive in one piece) dominate
            tokens_per_s=decoded_tokens / decode_seconds if decode_seconds > 0 else None,
        )
        if per_answer:
            report["answers"] = answers
    return report


def citation_correct(text: str, sources: list[Any], answers: list[str]) -> float:
    """1 when the answer cites at least one source and a cited source holds a reference answer."""
    cited = set(cited_numbers(text))
    return float(any(s.number in cited and contains_answer(s.text, answers) for s in sources))


def rag_scorer(
    settings: Any, qa_files: Iterable[Path], prefix: str, limit: int, split: str = "heldout"
) -> Callable[[Any, Any], dict[str, float]]:
    """A ``(model, tokenizer) -> scores`` function for the retraining gate: the model answers ``limit``
    questions of each file's ``split`` through the real chat chain, from a collection of that file's
    contexts (``<prefix>-<file stem>``, built on first use), each question twice: of the whole collection
    and as if it lacked the question's passage. The scores, over all the questions: ``f1`` (token F1 of the
    answers when the passage is there), ``abstain_when_absent`` and ``abstain_when_present`` (the shares
    declined)."""
    from chatbot.llm import LocalChatModel
    from finetune.device import model_device
    from finetune.models import Generator

    asked = []
    for path in qa_files:
        qa = load_squad(Path(path))
        items = spread(qa.subset(split).items, limit) or spread(qa.items, limit)
        asked.append((f"{prefix}-{slug(Path(path).stem).lower()}", qa, items))

    def score(model: Any, tokenizer: Any) -> float:
        generator = Generator(model, tokenizer, model_device(model), "candidate")
        service = ChatService(
            settings, llm=LocalChatModel(generator=generator, generation=settings.generation)
        )
        from tqdm import tqdm

        keys = ("f1", "abstain_when_absent", "abstain_when_present")
        weighted: dict[str, list[tuple[float, int]]] = {k: [] for k in keys}
        for collection, qa, items in asked:
            ensure_collection(service, collection, qa)
            with tqdm(total=len(items), desc=f"grounded-QA gate ({collection})", unit="question") as bar:

                def advance(done: int, total: int, bar: tqdm = bar) -> None:
                    bar.update(done - bar.n)

                report = evaluate_rag(
                    service, collection, items, progress=advance, modes=("present", "absent")
                )
            for key in keys:
                if key in report:
                    weighted[key].append((report[key], len(items)))
        return {
            key: sum(v * n for v, n in pairs) / sum(n for _, n in pairs)
            for key, pairs in weighted.items()
            if pairs
        }

    return score
