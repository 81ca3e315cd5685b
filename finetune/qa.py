"""Question-answer files in SQuAD format (v1.1, and v2.0 with unanswerable questions).

One reader serves training (the grounded-QA recipe) and evaluation (``chatbot eval rag``), so both see the
same documents, the same questions and the same article split. Every paragraph ``context`` becomes one
document named ``<article-slug>-<paragraph>.txt``; a question belongs to the document it was written on.

The article split is by position in the file: even-numbered articles (0, 2, 4, ...) are ``train``, odd ones
``heldout``. It is stable (adding questions never moves an article) and needs no seed, and it is the split
the retrieval benchmark already tunes and reports on.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("all", "train", "heldout")


class QAFileError(ValueError):
    """A question-answer file that cannot be read; the message names the file and the place in it."""


@dataclass
class QAItem:
    id: str
    question: str
    answers: list[str]  # empty for an unanswerable (SQuAD v2.0) question
    doc: str  # the document (context) the question was written on
    article: int = 0  # index of the article in its file

    @property
    def answerable(self) -> bool:
        return bool(self.answers)


@dataclass
class QASet:
    contexts: dict[str, str]  # document name -> context text
    items: list[QAItem] = field(default_factory=list)

    def subset(self, split: str) -> QASet:
        """The questions (and their documents) of one half of the articles; ``all`` is the whole set."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        if split == "all":
            return self
        keep = [i for i in self.items if in_split(i.article, split)]
        docs = {i.doc for i in keep}
        return QASet({d: t for d, t in self.contexts.items() if d in docs}, keep)


def in_split(article: int, split: str) -> bool:
    return split == "all" or (article % 2 == 0) == (split == "train")


def load_squad(path: Path) -> QASet:
    """Read a SQuAD v1.1 or v2.0 file; malformed structure is reported with the file and the place in it."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QAFileError(f"{path}: cannot read a SQuAD JSON file ({exc})") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), list):
        raise QAFileError(f"{path}: expected an object with a 'data' list (SQuAD v1.1/v2.0 format)")
    qa = QASet(contexts={})
    for a, article in enumerate(raw["data"]):
        if not isinstance(article, dict):
            raise QAFileError(f"{path}: data[{a}] is not an object")
        title = slug(str(article.get("title", f"article-{a}")))
        for p, para in enumerate(article.get("paragraphs", [])):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            if not isinstance(para.get("context"), str) or not isinstance(para.get("qas"), list):
                raise QAFileError(f"{where}: needs a 'context' string and a 'qas' list")
            doc = f"{title}-{p:03d}.txt"
            qa.contexts[doc] = para["context"]
            for q, item in enumerate(para["qas"]):
                answers = [x.get("text", "") for x in item.get("answers", []) if isinstance(x, dict)]
                answers = [x for x in answers if x.strip()]
                impossible = bool(item.get("is_impossible", False))
                if not isinstance(item.get("question"), str) or not item["question"].strip():
                    raise QAFileError(f"{where}.qas[{q}]: needs a 'question' string")
                if not answers and not impossible:
                    raise QAFileError(
                        f"{where}.qas[{q}]: needs at least one answer text (or is_impossible: true)"
                    )
                qa.items.append(
                    QAItem(str(item.get("id", f"{a}-{p}-{q}")), item["question"], answers, doc, a)
                )
    if not qa.items:
        raise QAFileError(f"{path}: holds no questions")
    return qa


def qa_paths(paths: Iterable[Path | str]) -> list[Path]:
    """Question files named by ``paths``: a file as it is, a folder as every ``*.json`` in it (sorted); paths
    that do not exist are left out."""
    found = []
    for path in map(Path, paths):
        found += sorted(path.glob("*.json")) if path.is_dir() else [path]
    return [p for p in found if p.is_file()]


def spread(items: list[QAItem], limit: int | None) -> list[QAItem]:
    """``limit`` items taken evenly across the file (so every article is represented), deterministic."""
    if not limit or limit >= len(items):
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def ascii_fold(text: str) -> str:
    """``text`` without its accents, and without any other character ASCII lacks (``Lendínez`` → ``Lendinez``)."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", ascii_fold(text)).strip("-")[:60] or "article"


def contains_answer(text: str, answers: list[str]) -> bool:
    """Whether ``text`` holds one of ``answers`` (case and spacing ignored)."""
    flat = " ".join(text.lower().split())
    return any(" ".join(a.lower().split()) in flat for a in answers if a.strip())
