"""The grounded-QA adapter that ships with the project: its files, and how the registry serves it."""

import json
import struct
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import finetune.registry as registry_module
from finetune.models import load_version
from finetune.registry import SHIPPED_ID, Registry, shipped_dir


@pytest.mark.parametrize("base", ["embedded", "embedded-gemma3-270m"])
def test_the_shipped_adapter_is_a_small_float16_lora_on_its_embedded_model(base):
    folder = shipped_dir(base)
    record = json.loads((folder / "version.json").read_text())
    assert record["id"] == SHIPPED_ID and record["kind"] == "lora" and record["base_setting"] == base
    config = json.loads((folder / "model" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and set(config["target_modules"]) >= {"q_proj", "down_proj"}
    assert config["base_model_name_or_path"] == base  # no path of the machine that trained it
    weights = folder / "model" / "adapter_model.safetensors"
    assert weights.stat().st_size < 12_000_000  # "a few MB": rank 16 on 7 projections is 9.8 MB in float16
    header_len = struct.unpack("<Q", weights.read_bytes()[:8])[0]
    header = json.loads(weights.read_bytes()[8 : 8 + header_len])
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"F16"}
    assert len(json.loads((folder / "manifest.json").read_text())["items"]) > 500


@pytest.fixture
def shipped(settings, tiny_llm_dir, tmp_path, monkeypatch):
    """A shipped adapter for the tiny model, in place of the real one (which fits the embedded model)."""
    base = AutoModelForCausalLM.from_pretrained(tiny_llm_dir)
    lora = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    folder = tmp_path / "shipped"
    lora.save_pretrained(folder / "model")  # no tokenizer: the base model's is used
    record = {
        "id": SHIPPED_ID,
        "kind": "lora",
        "base_model": str(tiny_llm_dir),
        "base_setting": str(tiny_llm_dir),
        "created_at": "2026-11-24T00:00:00+00:00",
        "note": "shipped",
    }
    (folder / "version.json").write_text(json.dumps(record))
    (folder / "manifest.json").write_text(json.dumps({"items": {}}))
    monkeypatch.setattr(registry_module, "SHIPPED_DIR", folder)
    expected = lora.merge_and_unload().model.layers[0].self_attn.q_proj.weight.detach().clone()
    return expected


def test_shipped_version_is_current_until_another_is_promoted(settings, shipped, tiny_llm_dir, tmp_path):
    registry = Registry(settings)
    assert registry.current_id() == SHIPPED_ID and [v.id for v in registry.list()] == [SHIPPED_ID]
    model, tokenizer = load_version(settings)  # base weights + shipped adapter, base tokenizer
    assert torch.allclose(model.model.layers[0].self_attn.q_proj.weight, shipped, atol=1e-6)
    assert tokenizer.eos_token == "<|im_end|>"
    other = registry.add(
        Path(tiny_llm_dir),
        kind="full",
        base_model=str(tiny_llm_dir),
        manifest={},
        settings={},
        metrics={},
        parent=SHIPPED_ID,
    )
    registry.promote(other.id)
    assert registry.current_id() == other.id
    assert registry.rollback().id == SHIPPED_ID  # back to the shipped adapter, not to the bare base


def test_shipped_version_is_not_offered_for_another_generator(settings, shipped, tmp_path):
    other = settings.model_copy(
        update={"models": settings.models.model_copy(update={"generator": str(tmp_path)})}
    )
    assert Registry(other).current_id() is None and Registry(other).list() == []
    from finetune.models import version_key

    base = settings.model_copy(update={"models": settings.models.model_copy(update={"version": "base"})})
    assert version_key(base) is None and version_key(settings) == SHIPPED_ID


def test_an_adapter_ships_with_its_embedded_base_and_only_on_one(settings, tiny_llm_dir, tmp_path):
    from finetune.models import GEMMA
    from finetune.registry import RegistryError, ship

    base = AutoModelForCausalLM.from_pretrained(tiny_llm_dir)
    lora = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    added = {"kind": "lora", "base_model": str(tiny_llm_dir), "manifest": {}, "settings": {}, "metrics": {}}
    on_folder = Registry(settings).add(tmp_path / "adapter", **added)
    with pytest.raises(RegistryError, match="only an adapter on an embedded base"):
        ship(on_folder, {}, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    on_gemma = settings.model_copy(update={"models": settings.models.model_copy(update={"generator": GEMMA})})
    version = Registry(on_gemma).add(tmp_path / "adapter", **added)
    out = ship(version, {"f1": 0.5}, tmp_path / "out")
    record = json.loads((out / "version.json").read_text())
    assert record["base_setting"] == GEMMA and record["metrics"]["f1"] == 0.5
    # the adapter names its base by the setting, not by the folder the training machine loaded it from
    config = json.loads((out / "model" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == GEMMA and config["r"] == 2
    assert (
        load_file(str(out / "model" / "adapter_model.safetensors")).keys()
        == load_file(str(tmp_path / "adapter" / "adapter_model.safetensors")).keys()
    )


def test_each_embedded_base_is_offered_its_own_shipped_adapter(settings, tiny_llm_dir, tmp_path, monkeypatch):
    from finetune.models import EMBEDDED, GEMMA
    from finetune.registry import ship, shipped_dir

    monkeypatch.setattr(registry_module, "SHIPPED_DIR", tmp_path / "adapters" / "grounded-qa")
    base = AutoModelForCausalLM.from_pretrained(tiny_llm_dir)
    lora = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    added = {"kind": "lora", "base_model": str(tiny_llm_dir), "manifest": {}, "settings": {}, "metrics": {}}

    def on(generator: str):
        return settings.model_copy(
            update={"models": settings.models.model_copy(update={"generator": generator})}
        )

    out = ship(Registry(on(GEMMA)).add(tmp_path / "adapter", **added), {})
    assert out == tmp_path / "adapters" / "grounded-qa-gemma3-270m" == shipped_dir(GEMMA)
    assert Registry(on(GEMMA)).current_id() == SHIPPED_ID
    assert Registry(on(GEMMA)).shipped().dir == out
    assert Registry(on(EMBEDDED)).shipped() is None  # the default base has none in this folder yet
    out = ship(Registry(on(EMBEDDED)).add(tmp_path / "adapter", **added), {})
    assert out == tmp_path / "adapters" / "grounded-qa"
    assert Registry(on(EMBEDDED)).shipped().base_setting == EMBEDDED
    assert Registry(on(GEMMA)).shipped().dir == tmp_path / "adapters" / "grounded-qa-gemma3-270m"
