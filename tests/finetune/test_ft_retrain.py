"""Incremental retraining: promotes a better model, is idempotent, rejects a worse one, runs one at a time."""

from __future__ import annotations

import json

from ft_helpers import write_docs

from finetune.data import Item, content_key
from finetune.registry import Registry
from finetune.retrain import retrain
from finetune.train import find_run_to_resume, runs_dir, unfinished_runs
from retrieval.files import try_exclusive

NEW_DOC = {
    "new.md": "\n\n".join(f"Room {i} of the library has {i + 2} tables and one printer." for i in range(8))
}


def grounded_example(i: int) -> Item:
    pairs = (
        ("system", "Answer from the numbered sources."),
        (
            "user",
            f"[1] (room-{i}.md)\nRoom {i} has {i + 2} tables.\n\nQuestion: How many tables has room {i}?",
        ),
        ("assistant", f"{i + 2} tables [1]."),
    )
    return Item("chat", f"qa.json:{i}:positive", content_key("chat", pairs), messages=pairs)


def test_retrain_promotes_then_idles_then_rejects_a_worse_candidate(ft_settings, tmp_path):
    registry = Registry(ft_settings)

    first = retrain(ft_settings)  # no current version: the candidate is compared with the base model
    assert first.status == "promoted", first.message
    assert first.exit_code == 0 and registry.current().id == first.candidate
    ppl = first.scores["new_data_perplexity"]
    assert ppl["candidate"] < ppl["current"]

    again = retrain(ft_settings)
    assert (again.status, again.exit_code) == ("nothing-new", 4)
    assert len(registry.list()) == 1  # idempotent: nothing trained, nothing registered

    # New data arrives, but the candidate is trained badly (learning rate 5, 1000x the usual): it gets worse
    # (new-data perplexity ~461 -> ~467 here), and the gate allows no loss at all.
    write_docs(ft_settings.finetune.docs_dirs[0], NEW_DOC)
    worse = {"learning_rate": 5.0, "gate_max_retention_loss": 0.0}
    bad = ft_settings.model_copy(update={"finetune": ft_settings.finetune.model_copy(update=worse)})
    asked: list[int] = []

    def grounded(wanted: int) -> list[Item]:  # what `chatbot retrain` draws from the grounded-QA files
        asked.append(wanted)
        return [grounded_example(i) for i in range(wanted + 5)]

    rejected = retrain(bad, grounded=grounded)
    assert (rejected.status, rejected.exit_code) == ("rejected", 3), (rejected.message, rejected.scores)
    assert rejected.new_items == 3  # the new document cut into 3 passages
    # grounded-QA examples are asked for by number (grounded_replay_min: more than 0.5 per new item here), and
    # that many are replayed beside the earlier items
    assert asked == [ft_settings.finetune.grounded_replay_min]
    assert rejected.replayed_items > asked[0]
    # it got worse than the current model on the new or on the earlier data, and the gate says which
    assert any("data perplexity" in r for r in rejected.reasons), rejected.reasons
    worse_on = [m for m, s in rejected.scores.items() if s["candidate"] > s["current"]]
    assert worse_on and all(
        m.replace("_", "-").split("-perplexity")[0] in " ".join(rejected.reasons) for m in worse_on
    )
    assert registry.current().id == first.candidate  # the current model was kept
    candidate = registry.get(rejected.candidate)
    assert candidate.parent == first.candidate  # continued from the current adapter
    assert retrain(bad).status == "nothing-new"  # the same data and settings would give the same candidate
    # other settings (the learning rate put right) are worth another try on the same data
    retry = retrain(ft_settings)
    assert retry.status in ("promoted", "rejected") and retry.candidate not in (None, rejected.candidate)


def test_a_candidate_no_check_could_compare_is_rejected(ft_settings):
    """One new item (nothing held out), no earlier data, no grounded-QA harness: nothing shows the candidate
    is no worse, so it is not promoted, and the report says which checks had no data."""
    text = "Room 7 of the library has nine tables and one printer. " * 6
    report = retrain(ft_settings, items=[Item("doc", "rooms.md#0", content_key("doc", text), text=text)])
    assert (report.status, report.exit_code) == ("rejected", 3), report.message
    assert "no check could compare" in report.reasons[0]
    assert [s.split(":")[0] for s in report.skipped] == [
        "new-data perplexity",
        "earlier-data perplexity",
        "grounded-QA F1",
    ]
    assert "no new item was held out" in report.skipped[0] and "not checked" in report.message
    assert Registry(ft_settings).current() is None


def test_a_rollback_made_while_it_trained_wins(ft_settings):
    """The retrain started from v0001; the administrator rolled back meanwhile: the candidate is not promoted
    over that choice. A killed retrain's run is not one `chatbot train --resume` would pick, and the next
    retrain clears it."""
    registry = Registry(ft_settings)
    first = retrain(ft_settings)
    assert first.status == "promoted"
    (run_dir,) = [p for p in runs_dir(ft_settings).iterdir() if p.name.startswith("retrain-")]
    record = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**record, "status": "running"}))  # as if killed
    assert find_run_to_resume(ft_settings) is None

    def harness(model, tokenizer):  # the gate's grounded-QA check, during which the rollback happens
        if registry.current_id() == first.candidate:
            registry.rollback()
        return 0.5

    write_docs(ft_settings.finetune.docs_dirs[0], NEW_DOC)
    # another val_fraction since: earlier items keep the side the current version's manifest gives them
    other_split = ft_settings.model_copy(
        update={"finetune": ft_settings.finetune.model_copy(update={"val_fraction": 0.6})}
    )
    report = retrain(other_split, rag_eval=harness)
    assert (report.status, report.exit_code) == ("rejected", 3), report.message
    assert f"changed from {first.candidate} to the base model" in report.message
    assert registry.current_id() is None  # the rollback stands
    # the killed run (other data) is gone; a new run may have taken its name within the same second
    assert not unfinished_runs(ft_settings, "retrain")
    left = [json.loads(p.read_text())["started_at"] for p in runs_dir(ft_settings).glob("*/run.json")]
    assert record["started_at"] not in left
    before = registry.get(first.candidate).manifest["items"]
    after = registry.get(report.candidate).manifest["items"]
    assert {k: v["split"] for k, v in after.items() if k in before} == {
        k: v["split"] for k, v in before.items()
    }


def test_a_candidate_that_stops_declining_is_rejected(ft_settings):
    """The grounded-QA evaluation keeps its F1 while the candidate declines fewer of the questions whose
    passage is absent (a model taught to answer follow-ups answered off-topic ones too): not promoted, and
    the gate says why; the same candidate with its abstention kept would pass."""
    first = retrain(ft_settings)
    assert first.status == "promoted"
    measured = iter(
        [
            {"f1": 0.50, "abstain_when_absent": 0.95, "abstain_when_present": 0.10},  # the current model
            {"f1": 0.51, "abstain_when_absent": 0.72, "abstain_when_present": 0.04},  # the candidate
        ]
    )
    write_docs(ft_settings.finetune.docs_dirs[0], NEW_DOC)
    report = retrain(ft_settings, rag_eval=lambda model, tokenizer: next(measured))
    assert report.status == "rejected", report.message
    assert report.scores["rag_abstain_when_absent"] == {"current": 0.95, "candidate": 0.72}
    (reason,) = [r for r in report.reasons if "grounded-QA" in r]
    assert "declines 0.720 of the questions whose passage is absent" in reason
    assert "gate_rag_max_abstain_change" in reason
    assert Registry(ft_settings).current_id() == first.candidate
    # the checks alone: within the allowed change both ways it passes, beyond it either way it fails
    from finetune.retrain import gate

    kept = {"rag_score": {"current": 0.5, "candidate": 0.5}}
    assert not gate(
        {
            **kept,
            "rag_abstain_when_absent": {"current": 0.80, "candidate": 0.76},
            "rag_abstain_when_present": {"current": 0.10, "candidate": 0.14},
        },
        ft_settings,
    )
    (more,) = gate({**kept, "rag_abstain_when_present": {"current": 0.10, "candidate": 0.20}}, ft_settings)
    assert "passage is present, above 0.150" in more


def test_a_second_retrain_waits_for_none(ft_settings):
    with try_exclusive(ft_settings.data_dir / "models" / "retrain.lock") as held:
        assert held
        report = retrain(ft_settings)
    assert (report.status, report.exit_code) == ("locked", 5)
    assert Registry(ft_settings).list() == []


def test_an_interrupted_retrain_continues_where_it_stopped(ft_settings, monkeypatch):
    """Stopped after its step-3 checkpoint (Ctrl-C, a reboot), the next retrain on the same data and settings
    continues that run rather than training again from the start."""
    import pytest
    from transformers import TrainerCallback

    import finetune.retrain as retrain_module

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 4:
                raise KeyboardInterrupt

    real = retrain_module.train
    monkeypatch.setattr(retrain_module, "train", lambda *a, **kw: real(*a, **kw, callbacks=[Interrupt()]))
    with pytest.raises(KeyboardInterrupt):
        retrain(ft_settings)
    monkeypatch.setattr(retrain_module, "train", real)
    ((killed, _),) = unfinished_runs(ft_settings, "retrain")
    assert find_run_to_resume(ft_settings) is None  # not one for `chatbot train --resume`
    report = retrain(ft_settings)
    assert report.status == "promoted", report.message
    assert Registry(ft_settings).get(report.candidate).metrics["resumed_from"] == "checkpoint-3"
    assert json.loads((killed / "run.json").read_text())["status"] == "done" and not unfinished_runs(
        ft_settings, "retrain"
    )
