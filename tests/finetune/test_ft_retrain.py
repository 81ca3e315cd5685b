"""Incremental retraining: promotes a better model, is idempotent, rejects a worse one, runs one at a time."""

from __future__ import annotations

from ft_helpers import write_docs

from finetune.registry import Registry
from finetune.retrain import retrain
from retrieval.files import try_exclusive

NEW_DOC = {
    "new.md": "\n\n".join(f"Room {i} of the library has {i + 2} tables and one printer." for i in range(8))
}


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
    rejected = retrain(bad)
    assert (rejected.status, rejected.exit_code) == ("rejected", 3), (rejected.message, rejected.scores)
    assert rejected.new_items == 3 and rejected.replayed_items > 0  # the new document cut into 3 passages
    # it got worse than the current model on the new or on the earlier data, and the gate says which
    assert any("data perplexity" in r for r in rejected.reasons), rejected.reasons
    worse_on = [m for m, s in rejected.scores.items() if s["candidate"] > s["current"]]
    assert worse_on and all(
        m.replace("_", "-").split("-perplexity")[0] in " ".join(rejected.reasons) for m in worse_on
    )
    assert registry.current().id == first.candidate  # the current model was kept
    candidate = registry.get(rejected.candidate)
    assert candidate.parent == first.candidate  # continued from the current adapter
    assert retrain(bad).status == "nothing-new"  # the same data would give the same rejected candidate


def test_a_second_retrain_waits_for_none(ft_settings):
    with try_exclusive(ft_settings.data_dir / "models" / "retrain.lock") as held:
        assert held
        report = retrain(ft_settings)
    assert (report.status, report.exit_code) == ("locked", 5)
    assert Registry(ft_settings).list() == []
