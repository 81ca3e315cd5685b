"""The project's own question files (data/qa/): what training and the benchmarks read must be right."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from finetune.config import FinetuneSettings
from finetune.qa import load_squad, qa_paths

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted((ROOT / "data/qa").glob("*.json"))


def test_the_question_files_are_there() -> None:
    assert len(FILES) >= 11
    # what `chatbot retrain` replays, by default: every file here
    assert qa_paths(ROOT / p for p in FinetuneSettings().grounded_qa_files) == FILES


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_answer_is_the_span_it_points_at(path: Path) -> None:
    raw = json.loads(path.read_text(encoding="utf-8"))
    ids: Counter[str] = Counter()
    for article in raw["data"]:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                ids[qa["id"]] += 1
                assert qa["answers"], qa["id"]
                for answer in qa["answers"]:
                    start, text = answer["answer_start"], answer["text"]
                    assert context[start : start + len(text)] == text, (qa["id"], text)
    assert [i for i, n in ids.items() if n > 1] == []


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_both_halves_hold_questions(path: Path) -> None:
    qa = load_squad(path)
    train, heldout = qa.subset("train"), qa.subset("heldout")
    assert train.items and heldout.items
    assert not set(train.contexts) & set(heldout.contexts)  # no passage is in both halves
