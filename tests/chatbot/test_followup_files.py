"""The follow-up question files (data/followups/) that benchmarks/follow_ups.py reads: each conversation names
a collection that exists, and every reference answer is what its documents say."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from finetune.qa import load_squad

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted((ROOT / "data/followups").glob("*.json"))


def documents(collection: str) -> str:
    if collection == "sample":
        return "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "data/sample").iterdir()))
    return "\n".join(load_squad(ROOT / "data/qa" / f"{collection}.json").contexts.values())


def plain(text: str) -> str:
    return re.sub(r"\s+", " ", text).lower()  # the guides wrap their lines


def test_the_follow_up_files_are_there() -> None:
    assert [p.name for p in FILES] == ["sample-org.json", "wiki-manual.json"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_reference_answer_is_in_its_documents(path: Path) -> None:
    conversations = json.loads(path.read_text(encoding="utf-8"))["conversations"]
    assert conversations
    for conversation in conversations:
        text = plain(documents(conversation["collection"]))
        assert conversation["first"].strip() and conversation["on_topic"] and conversation["off_topic"]
        for item in conversation["on_topic"]:
            assert set(item) == {"question", "answer"}
            if item["answer"] is not None:  # null: the documents in the question's language do not say
                assert plain(item["answer"]) in text, (conversation["collection"], item)
