import os
import stat

import pytest

from chatbot.memory import ConversationNotFound, Conversations


def test_conversations_survive_a_restart_and_stay_isolated(tmp_path):
    db = tmp_path / "conversations.sqlite"
    store = Conversations(db)
    a, b = store.create("first"), store.create("second")
    store.add_message(a, "user", "hello")
    store.add_message(a, "assistant", "hi [1]", [{"number": 1, "source": "guide.md"}])
    store.add_message(b, "user", "other")

    reopened = Conversations(db)  # a new process would do exactly this
    msgs = reopened.messages(a)
    assert [(m.role, m.content) for m in msgs] == [("user", "hello"), ("assistant", "hi [1]")]
    assert msgs[1].sources == [{"number": 1, "source": "guide.md"}]
    assert [m.content for m in reopened.messages(b)] == ["other"]
    listed = {c.id: c for c in reopened.list()}
    assert listed[a].messages == 2 and listed[b].messages == 1
    assert reopened.list()[0].id == b  # most recently active first
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600  # readable by the service's user only


def test_rename_delete_and_unknown_ids(tmp_path):
    store = Conversations(tmp_path / "c.sqlite")
    a = store.create()
    store.add_message(a, "user", "q")
    store.rename(a, "  Opening hours ")
    assert store.get(a).title == "Opening hours"
    with pytest.raises(ValueError):
        store.rename(a, "   ")
    store.delete(a)
    assert store.list() == []
    for call in (lambda: store.messages(a), lambda: store.rename(a, "x"), lambda: store.delete(a)):
        with pytest.raises(ConversationNotFound, match=a):
            call()
    with pytest.raises(ConversationNotFound):
        store.add_message("missing", "user", "q")


def test_feedback_pairs_answer_with_its_question_and_updates(tmp_path):
    store = Conversations(tmp_path / "c.sqlite")
    a = store.create()
    store.add_message(a, "user", "When does it open?")
    answer_id = store.add_message(a, "assistant", "At nine [1].")
    store.add_feedback(answer_id, 1)
    store.add_feedback(answer_id, -1, correction="At nine in the morning [1].")
    rows = store.feedback()
    assert len(rows) == 1
    assert rows[0]["question"] == "When does it open?" and rows[0]["answer"] == "At nine [1]."
    assert rows[0]["rating"] == -1 and rows[0]["correction"] == "At nine in the morning [1]."
    with pytest.raises(ValueError, match="rating"):
        store.add_feedback(answer_id, 5)
    question_id = answer_id - 1
    with pytest.raises(ValueError, match="not an assistant answer"):
        store.add_feedback(question_id, 1)


def test_owners_see_only_their_conversations(tmp_path):
    store = Conversations(tmp_path / "c.sqlite")
    mine = store.create("mine", owner="alice")
    store.create("theirs", owner="bob")
    assert [c.id for c in store.list(owner="alice")] == [mine]
    assert len(store.list()) == 2  # the unfiltered list is for administrators (CLI, API)
    assert store.get(mine).owner == "alice"


def test_another_owner_cannot_read_rename_or_delete(tmp_path):
    store = Conversations(tmp_path / "c.sqlite")
    conv, _ = store.save_turn(None, "When does it open?", "At nine [1].", owner="alice")
    for call in (
        lambda: store.get(conv, owner="bob"),
        lambda: store.messages(conv, owner="bob"),
        lambda: store.rename(conv, "mine now", owner="bob"),
        lambda: store.delete(conv, owner="bob"),
    ):
        with pytest.raises(ConversationNotFound):
            call()
    assert store.get(conv, owner="alice").title == "When does it open?"
    assert [m.role for m in store.messages(conv, owner="alice")] == ["user", "assistant"]


def test_a_store_from_before_unsure_answers_gains_the_mark_and_keeps_its_messages(tmp_path):
    import sqlite3

    db = tmp_path / "conversations.sqlite"
    old = sqlite3.connect(db)  # the schema as it was before answers could be marked unsure
    old.executescript(
        """
        CREATE TABLE conversations (id TEXT PRIMARY KEY, owner TEXT NOT NULL DEFAULT '', title TEXT NOT NULL,
            created_at REAL NOT NULL, updated_at REAL NOT NULL);
        CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, conversation_id TEXT NOT NULL
            REFERENCES conversations(id) ON DELETE CASCADE, role TEXT NOT NULL, content TEXT NOT NULL,
            sources TEXT NOT NULL DEFAULT '[]', created_at REAL NOT NULL);
        INSERT INTO conversations VALUES ('c1', 'ana', 'Hours', 1.0, 1.0);
        INSERT INTO messages (conversation_id, role, content, created_at) VALUES ('c1', 'user', 'When?', 1.0);
        INSERT INTO messages (conversation_id, role, content, created_at) VALUES ('c1', 'assistant', 'At 9.', 1.0);
        """
    )
    old.commit()
    old.close()
    store = Conversations(db)
    assert [(m.content, m.unsure) for m in store.messages("c1")] == [("When?", False), ("At 9.", False)]
    store.save_turn("c1", "And on Sunday?", "At 10 [1].", unsure=True, owner="ana")
    assert [m.unsure for m in Conversations(db).messages("c1")] == [False, False, False, True]
