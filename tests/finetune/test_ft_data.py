"""Training data: packing, assistant-only loss mask, malformed input, dedup, split, feedback."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from ft_helpers import CHATS, write_chats

from finetune.data import (
    IGNORE,
    DataError,
    Item,
    build_trainset,
    collect,
    content_key,
    encode_chat,
    pack_texts,
    read_chat_jsonl,
    split,
)
from finetune.feedback import FEEDBACK_TABLE, feedback_conversations


@pytest.fixture(scope="module")
def tokenizer(tiny_llm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llm_dir)


def test_packing_puts_eos_between_documents_and_wastes_nothing(tokenizer):
    docs = [
        ("a.md#0", "The library opens at nine."),
        ("a.md#1", "It closes at eight."),
        ("b.md#0", "La biblioteca abre a las nueve."),
    ]
    stream = []
    for i, (_, text) in enumerate(docs):
        stream += tokenizer.encode(text, add_special_tokens=False)
        if i == 0:
            stream += tokenizer.encode("\n\n", add_special_tokens=False)  # same document: no EOS
        elif i == 1:
            stream.append(tokenizer.eos_token_id)  # document boundary
    stream.append(tokenizer.eos_token_id)
    blocks = pack_texts(docs, tokenizer, block_size=8)
    assert all(len(b["input_ids"]) == 8 for b in blocks)  # no padding anywhere
    assert [t for b in blocks for t in b["input_ids"]] == stream[: len(blocks) * 8]
    assert len(blocks) == len(stream) // 8
    assert blocks[0]["labels"] == blocks[0]["input_ids"]
    assert sum(t == tokenizer.eos_token_id for b in blocks for t in b["input_ids"]) >= 1


def test_loss_mask_covers_only_assistant_replies(tokenizer):
    messages = CHATS[1] + [
        {"role": "user", "content": "And pages?"},
        {"role": "assistant", "content": "Pages too."},
    ]
    enc = encode_chat(messages, tokenizer, max_len=512)
    learned = tokenizer.decode(
        [t for t, lab in zip(enc["input_ids"], enc["labels"], strict=True) if lab != IGNORE]
    )
    assert "With numbers in square brackets, like [1]." in learned and "Pages too." in learned
    for prompt_text in ("Answer from the sources", "How are sources cited?", "And pages?", "user", "system"):
        assert prompt_text not in learned
    assert learned.count("<|im_end|>") == 2  # the model learns to end its turn
    assert enc["labels"][:5] == [IGNORE] * 5


def test_malformed_jsonl_lines_are_reported_with_file_and_line(tmp_path):
    path = tmp_path / "chat.jsonl"
    good = json.dumps({"messages": CHATS[0]})
    path.write_text(
        "\n".join(
            [
                good,
                "{not json",
                json.dumps({"messages": [{"role": "bot", "content": "x"}]}),
                "",
                json.dumps({"messages": [{"role": "user", "content": "q"}]}),
                good,
                json.dumps({"messages": CHATS[0][::-1]}),  # assistant first
            ]
        )
        + "\n"
    )
    found = read_chat_jsonl(path)
    assert len(found.items) == 2
    assert [i.line for i in found.issues] == [2, 3, 5, 7]
    assert str(found.issues[0]).startswith(f"{path}:2: ")
    assert "role" in found.issues[1].message and "assistant" in found.issues[2].message
    assert "starts with an assistant message" in found.issues[3].message


def test_duplicates_are_dropped_across_files(ft_settings, tmp_path):
    extra = write_chats(tmp_path / "more.jsonl", CHATS[:2])
    cfg = ft_settings.finetune.model_copy(update={"chat_files": [*ft_settings.finetune.chat_files, extra]})
    found = collect(cfg, ft_settings.data_dir)
    chats = [i for i in found.items if i.kind == "chat"]
    assert len(chats) == len(CHATS)
    assert len({i.key for i in found.items}) == len(found.items)


def test_split_is_seeded_and_stable_when_data_grows():
    items = [Item("chat", str(i), content_key("chat", str(i))) for i in range(200)]
    train, val = split(items, seed=1, val_fraction=0.2)
    assert 20 < len(val) < 60 and len(train) + len(val) == 200
    more = items + [Item("chat", f"new{i}", content_key("chat", f"new{i}")) for i in range(50)]
    _, val_more = split(more, seed=1, val_fraction=0.2)
    assert {i.key for i in val} <= {i.key for i in val_more}  # nothing moved from validation into training
    assert split(items, seed=2, val_fraction=0.2)[1] != val


def test_feedback_becomes_chat_examples(ft_settings):
    """A table with the columns typed as docs/finetune.md used to say (TEXT ids and times) is still read."""
    db = ft_settings.data_dir / "conversations.sqlite"
    db.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(db)
    con.execute(
        "CREATE TABLE feedback (id INTEGER PRIMARY KEY, conversation_id TEXT, message_id TEXT, "
        "question TEXT, answer TEXT, rating INTEGER, correction TEXT, created_at TEXT)"
    )
    rows = [
        ("Q good", "A good", 1, None),
        ("Q bad", "A bad", -1, None),
        ("Q fixed", "A wrong", -1, "A right"),
    ]
    con.executemany(
        "INSERT INTO feedback (conversation_id, message_id, question, answer, rating, correction, "
        "created_at) VALUES ('c', 'm', ?, ?, ?, ?, '2026-01-01')",
        rows,
    )
    con.commit()
    con.close()
    found = collect(ft_settings.finetune, ft_settings.data_dir)
    pairs = {i.messages for i in found.items if i.kind == "feedback"}
    assert pairs == {
        (("user", "Q good"), ("assistant", "A good")),
        (("user", "Q fixed"), ("assistant", "A right")),
    }


def test_feedback_written_by_the_chat_store_is_read_back(ft_settings):
    """The chat's own API writes the table (created from finetune's FEEDBACK_TABLE); training reads it."""
    from chatbot.memory import Conversations

    store = Conversations(ft_settings.data_dir / "conversations.sqlite")
    ratings = {"Q good": (1, None), "Q bad": (-1, None), "Q meh": (0, None), "Q fixed": (-1, "A right")}
    for question, (rating, correction) in ratings.items():
        _, answer_id = store.save_turn(None, question, f"answer to {question}")
        store.add_feedback(answer_id, rating, correction)
    pairs = [pairs for _, pairs in feedback_conversations(ft_settings.data_dir / "conversations.sqlite")]
    assert pairs == [
        (("user", "Q good"), ("assistant", "answer to Q good")),
        (("user", "Q fixed"), ("assistant", "A right")),
    ]


def test_docs_quote_the_feedback_table_as_the_code_defines_it():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "finetune.md").read_text(encoding="utf-8")
    assert f"```sql\n{FEEDBACK_TABLE.strip()}\n```" in docs


def test_missing_feedback_table_means_no_feedback(ft_settings):
    db = ft_settings.data_dir / "conversations.sqlite"
    db.parent.mkdir(parents=True, exist_ok=True)
    sqlite3.connect(db).execute("CREATE TABLE messages (id INTEGER)").connection.commit()
    assert not [i for i in collect(ft_settings.finetune, ft_settings.data_dir).items if i.kind == "feedback"]


def test_no_usable_data_is_a_clear_error(ft_settings, tokenizer):
    with pytest.raises(DataError, match="no training examples"):
        build_trainset([Item("doc", "x.md#0", "k", text="")], tokenizer, ft_settings.finetune)


def test_every_passage_the_manifest_records_is_trained_on(ft_settings, tokenizer):
    """The last partial block is kept: a short passage of the file that sorts last (here the only new text of
    a retrain) is not cut off while the manifest records it as trained on."""
    cfg = ft_settings.finetune.model_copy(update={"val_fraction": 0.0, "block_size": 64})
    long = " ".join(f"Aisle {i} holds the atlases." for i in range(20))
    items = [
        Item("doc", "a-guide.md#0", "k1", text=long),
        Item("doc", "returns.md#0", "k2", text="Returns are accepted within thirty days."),
    ]
    trainset = build_trainset(items, tokenizer, cfg)
    assert set(trainset.manifest["items"]) == {"k1", "k2"}
    trained = [t for block in trainset.train for t in block["input_ids"]]
    tail = tokenizer.encode("Returns are accepted within thirty days.", add_special_tokens=False)
    assert any(trained[i : i + len(tail)] == tail for i in range(len(trained)))
    assert (
        all(len(b["input_ids"]) == 64 for b in trainset.train[:-1])
        and len(trainset.train[-1]["input_ids"]) < 64
    )
