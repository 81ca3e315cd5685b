"""A real Trainer + peft run of the tiny model: what changes, what is written, what is registered."""

from __future__ import annotations

import torch
from ft_helpers import trainset_of
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from finetune.checkpoints import is_complete, read_metrics
from finetune.registry import Registry
from finetune.train import load_for_training, train


def pickles(folder):
    """The files of ``folder`` in PyTorch's pickle formats (a version must hold none)."""
    return [f.name for f in folder.iterdir() if f.suffix in (".bin", ".pt", ".pth", ".pkl")]


def test_lora_trains_adapters_only_and_writes_its_run(ft_settings):
    trainset = trainset_of(ft_settings)
    assert len(trainset.train) >= 8 and trainset.val
    base = AutoModelForCausalLM.from_pretrained(ft_settings.models.generator).state_dict()

    keep = ft_settings.finetune.model_copy(update={"keep_checkpoints": True})
    run = train(ft_settings.model_copy(update={"finetune": keep}), trainset, run_name="lora")

    # Adapter weights moved; the base weights (in the same trained model) did not.
    model, _, _ = load_for_training(ft_settings.model_copy(), run.version)
    trained = {
        k.replace("base_model.model.", "").replace(".base_layer", ""): v
        for k, v in model.state_dict().items()
    }
    for name, weight in base.items():
        assert torch.equal(trained[name], weight), name
    adapter = load_file(run.model_dir / "adapter_model.safetensors")
    assert not pickles(run.model_dir)
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # lora_B starts at zero: nonzero = trained
    assert all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)  # loaded trainable

    # Per-step metrics, evaluation with perplexity, a plot, complete checkpoints (last 2 kept).
    records = read_metrics(run.run_dir / "metrics.jsonl")
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 9))
    assert all({"learning_rate", "grad_norm"} <= r.keys() for r in steps)
    assert (
        steps[0]["learning_rate"] < steps[1]["learning_rate"] > steps[-1]["learning_rate"]
    )  # warmup, cosine
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in evals] == [4, 8] and evals[0]["eval_perplexity"] > 1
    assert (run.run_dir / "loss.png").stat().st_size > 1000
    checkpoints = sorted((run.run_dir / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["checkpoint-6", "checkpoint-8"]
    assert all(is_complete(c) for c in checkpoints)
    assert run.metrics["val_perplexity"] > 1 and run.metrics["tokens_per_second"] > 0

    # Registered, not current until promoted.
    registry = Registry(ft_settings)
    assert [v.id for v in registry.list()] == [run.version.id] and registry.current() is None
    assert run.version.base_model == ft_settings.models.generator and run.version.kind == "lora"
    assert run.version.manifest["items"] == trainset.manifest["items"]


def test_full_finetuning_changes_base_weights(ft_settings):
    update = {"method": "full", "max_steps": 2, "learning_rate": 1e-3, "save_steps": 1}
    cfg = ft_settings.finetune.model_copy(update=update)
    settings = ft_settings.model_copy(update={"finetune": cfg})
    run = train(settings, trainset_of(settings), register=False)
    assert run.kind == "full"
    assert not (run.run_dir / "checkpoints").exists()  # removed once the run finished (keep_checkpoints off)
    before = AutoModelForCausalLM.from_pretrained(settings.models.generator).state_dict()
    after = AutoModelForCausalLM.from_pretrained(run.model_dir).state_dict()
    assert not torch.equal(
        before["model.layers.0.self_attn.q_proj.weight"], after["model.layers.0.self_attn.q_proj.weight"]
    )
    assert not pickles(run.model_dir)


def test_search_reports_the_best_trial_by_validation_loss(ft_settings):
    from finetune.search import search

    cfg = ft_settings.finetune.model_copy(update={"search_max_steps": 1, "search_ranks": [2, 4]})
    settings = ft_settings.model_copy(update={"finetune": cfg})
    result = search(settings, trainset_of(settings), n_trials=2)
    assert len(result.trials) == 2
    assert result.best_val_loss == min(t["val_loss"] for t in result.trials)
    assert set(result.best_params) == {"learning_rate", "lora_r", "epochs"}
    assert Registry(settings).list() == []  # trials are not versions
