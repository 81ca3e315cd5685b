"""The RAG evaluation harness: retrieval hit@k and MRR, answer exact match and token F1, abstention, speed.

Input is a SQuAD v1.1 file (``data[].paragraphs[].context`` / ``qas[].question`` / ``qas[].answers[].text``).
Every context becomes one document of the evaluated collection (written under ``<data_dir>/eval/<name>/``
and synced when the collection does not exist yet). Each question is asked in a fresh conversation.

Answer normalisation is SQuAD's (lower case, no punctuation, no articles, single spaces), with the Spanish
articles added to the English ones because the shared evaluation set is Spanish.
"""

from __future__ import annotations

import json
import re
import statistics
import string
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatbot.service import ChatService

K_VALUES = (1, 5, 10)
_ARTICLES = re.compile(r"\b(a|an|the|el|la|los|las|un|una|unos|unas)\b")
_PUNCT = set(string.punctuation) | set("¿¡«»“”‘’")


class QAFileError(ValueError):
    pass


@dataclass
class QAItem:
    id: str
    question: str
    answers: list[str]
    doc: str  # the document (context) the question was written on


@dataclass
class QASet:
    contexts: dict[str, str]  # document name -> context text
    items: list[QAItem] = field(default_factory=list)


def load_squad(path: Path) -> QASet:
    """Read a SQuAD v1.1 file; malformed structure is reported with the file and the place in it."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QAFileError(f"{path}: cannot read a SQuAD JSON file ({exc})") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), list):
        raise QAFileError(f"{path}: expected an object with a 'data' list (SQuAD v1.1 format)")
    qa = QASet(contexts={})
    for a, article in enumerate(raw["data"]):
        title = _slug(str(article.get("title", f"article-{a}")))
        for p, para in enumerate(article.get("paragraphs", [])):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            if not isinstance(para.get("context"), str) or not isinstance(para.get("qas"), list):
                raise QAFileError(f"{where}: needs a 'context' string and a 'qas' list")
            doc = f"{title}-{p:03d}.txt"
            qa.contexts[doc] = para["context"]
            for q, item in enumerate(para["qas"]):
                answers = [x.get("text", "") for x in item.get("answers", []) if isinstance(x, dict)]
                if not isinstance(item.get("question"), str) or not any(answers):
                    raise QAFileError(f"{where}.qas[{q}]: needs a 'question' and at least one answer text")
                qa.items.append(QAItem(str(item.get("id", f"{a}-{p}-{q}")), item["question"], answers, doc))
    if not qa.items:
        raise QAFileError(f"{path}: holds no questions")
    return qa


def spread(items: list[QAItem], limit: int | None) -> list[QAItem]:
    """``limit`` items taken evenly across the file (so every article is represented), deterministic."""
    if not limit or limit >= len(items):
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9]+", "-", ascii_text).strip("-")[:60] or "article"


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


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
    from retrieval.collection import Collection

    if name in Collection.list(service.settings):
        return False
    folder = service.settings.data_dir / "eval" / name
    folder.mkdir(parents=True, exist_ok=True)
    for doc, text in qa.contexts.items():
        (folder / doc).write_text(text, encoding="utf-8")
    Collection.open(service.settings, name).sync(folder)
    return True


def evaluate_rag(
    service: ChatService,
    collection: str,
    items: list[QAItem],
    generate: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Score retrieval (and, with ``generate``, answers) on ``items``; returns the report as a dict."""
    from retrieval.collection import Collection

    col = Collection.open(service.settings, collection)
    ranks: list[int | None] = []
    em, f1, abstained, ttft = [], [], [], []
    decoded_tokens, decode_seconds = 0, 0.0
    started = time.perf_counter()
    for i, item in enumerate(items):
        hits = col.search(item.question, max(K_VALUES))
        ranks.append(answer_rank([h.text for h in hits], item.answers))
        if generate:
            answer = service.answer(item.question, collection=collection, remember=False)
            em.append(exact_match(answer.text, item.answers))
            f1.append(token_f1(answer.text, item.answers))
            abstained.append(float(answer.abstained))
            if answer.seconds_to_first_token is not None:
                ttft.append(answer.seconds_to_first_token)
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
        report.update(
            exact_match=statistics.fmean(em),
            f1=statistics.fmean(f1),
            abstention_rate=statistics.fmean(abstained),
            ttft_p50_s=statistics.median(ttft) if ttft else None,
            ttft_mean_s=statistics.fmean(ttft) if ttft else None,
            # all decoded tokens over all decoding time: a mean of per-answer rates would let one-word
            # answers (whose few tokens arrive in one piece) dominate
            tokens_per_s=decoded_tokens / decode_seconds if decode_seconds > 0 else None,
        )
    return report


def rag_scorer(settings: Any, qa_file: Path, collection: str, limit: int) -> Callable[[Any, Any], float]:
    """A ``(model, tokenizer) -> token F1`` function for the retraining gate: the model answers ``limit``
    questions of ``qa_file`` through the real chat chain, from ``collection`` (built from the file if
    missing)."""
    from chatbot.device import model_device
    from chatbot.llm import LocalChatModel
    from chatbot.models import Generator

    qa = load_squad(qa_file)
    items = spread(qa.items, limit)

    def score(model: Any, tokenizer: Any) -> float:
        generator = Generator(model, tokenizer, model_device(model), "candidate")
        service = ChatService(
            settings, llm=LocalChatModel(generator=generator, generation=settings.generation)
        )
        ensure_collection(service, collection, qa)
        return float(evaluate_rag(service, collection, items)["f1"])

    return score
