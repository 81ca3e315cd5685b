"""Registry promote/rollback, loading a version for inference, and merge + export."""

from __future__ import annotations

import pytest
import torch
from ft_helpers import trainset_of
from transformers import AutoModelForCausalLM, AutoTokenizer

from finetune.export import export, load_exported
from finetune.models import load_version, version_key
from finetune.registry import Registry, RegistryError
from finetune.train import train


def _register(registry: Registry, model_dir, parent=None):
    return registry.add(
        model_dir,
        kind="lora",
        base_model="/nowhere",
        manifest={"items": {}},
        settings={},
        metrics={},
        parent=parent,
    )


def test_promote_and_rollback_switch_the_current_version(settings, tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    registry = Registry(settings)
    first = _register(registry, tmp_path / "adapter")
    second = _register(registry, tmp_path / "adapter", parent=first.id)
    assert (first.id, second.id) == ("v0001", "v0002") and (second.path / "adapter_config.json").is_file()
    assert registry.current() is None and second.parent == first.id
    registry.promote(first.id)
    registry.promote(second.id)
    assert Registry(settings).current().id == second.id  # a fresh reader (another process) sees it
    assert registry.rollback().id == first.id
    assert registry.rollback() is None  # back to the base model
    with pytest.raises(RegistryError, match="no promoted version"):
        registry.rollback()
    with pytest.raises(RegistryError, match="v0009"):
        registry.promote("v0009")
    assert sorted(p.name for p in registry.root.iterdir()) == [".lock", "promoted.json", "versions"]
    # a promotion killed between its two writes (the list of promotions, then `current`): a rollback still
    # goes back from the version that is current, not from the one that never became current
    registry.promote(first.id)
    (registry.root / "promoted.json").write_text(f'["{first.id}", "{second.id}"]')
    assert registry.current().id == first.id and registry.rollback() is None


def test_load_version_and_export_give_the_same_model(ft_settings, tmp_path):
    settings = ft_settings.model_copy(
        update={"finetune": ft_settings.finetune.model_copy(update={"max_steps": 2})}
    )
    second = train(settings, trainset_of(settings)).version
    assert version_key(settings) is None  # no version yet: the running chat serves the base model
    Registry(settings).promote(second.id)
    assert version_key(settings) == second.id  # what the chat reloads on, without a restart
    model, tokenizer = load_version(settings)  # current version, merged
    ids = tokenizer("The library opens at nine", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        reference = model(ids).logits
        base = AutoModelForCausalLM.from_pretrained(settings.models.generator)(ids).logits
    assert not torch.allclose(reference, base, atol=1e-6)  # the adapter changes the output

    report = export(settings, second, tmp_path / "export", int8=True)
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "export")  # no peft needed
    assert AutoTokenizer.from_pretrained(tmp_path / "export").chat_template
    assert (tmp_path / "export" / "model.safetensors").is_file()
    assert not any("lora" in k for k in exported.state_dict())
    with torch.no_grad():
        assert torch.allclose(exported(ids).logits, reference, atol=1e-5)
    quantized, _ = load_exported(tmp_path / "export")
    with torch.no_grad():
        assert quantized(ids).logits.shape == reference.shape
    assert report["int8_mib"] < report["float32_mib"] and report["int8_tokens_per_s"] > 0


def test_a_version_keeps_the_weights_not_the_trainers_pickles(settings, tmp_path):
    # a checkpoint folder, as benchmarks/grounded_qa.py --checkpoints registers one
    checkpoint = tmp_path / "checkpoint-20"
    checkpoint.mkdir()
    kept = ("adapter_config.json", "adapter_model.safetensors", "trainer_state.json", "tokenizer.json")
    for name in (*kept, "training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth", "scaler.pt"):
        (checkpoint / name).write_bytes(b"{}")
    version = _register(Registry(settings), checkpoint)
    assert sorted(p.name for p in version.path.iterdir()) == sorted(kept)
    assert (checkpoint / "optimizer.pt").is_file()  # the run's checkpoint itself keeps them for --resume
