"""The app's background work and the path from chat feedback to training data."""

import time

import pytest

from chatbot.memory import Conversations
from chatbot.ui.training_jobs import current_job, start_job
from finetune.feedback import feedback_conversations


def test_feedback_from_the_chat_becomes_training_examples(tmp_path):
    db = tmp_path / "conversations.sqlite"
    store = Conversations(db)
    conv = store.create()
    store.add_message(conv, "user", "When does it open?")
    good = store.add_message(conv, "assistant", "At nine [1].")
    store.add_message(conv, "user", "And close?")
    bad = store.add_message(conv, "assistant", "At noon.")
    store.add_message(conv, "user", "Where?")
    store.add_message(conv, "assistant", "Somewhere.")  # not rated: not training data
    store.add_feedback(good, 1)
    store.add_feedback(bad, -1, correction="At eight in the evening [1].")
    examples = [pairs for _, pairs in feedback_conversations(db)]
    assert examples == [
        (("user", "When does it open?"), ("assistant", "At nine [1].")),
        (("user", "And close?"), ("assistant", "At eight in the evening [1].")),
    ]


def test_training_job_runs_in_the_background_and_is_found_again(settings):
    job = start_job(settings, ["models", "list"])
    deadline = time.time() + 120
    while job.alive() and time.time() < deadline:
        time.sleep(0.2)
    again = current_job(settings)  # as a reloaded page would find it
    assert again is not None and again.pid == job.pid and not again.alive()
    tail = again.log_tail()  # the listing reached the job's log (the shipped adapter fits the embedded model)
    assert "no current version" in tail or "* shipped" in tail
    with pytest.raises(RuntimeError, match="already running"):
        _start_twice(settings)


def _start_twice(settings):
    first = start_job(settings, ["settings"])
    try:
        start_job(settings, ["settings"])
    finally:
        while first.alive():
            time.sleep(0.1)
