"""The chat picks up a promoted or rolled-back fine-tuned version at the next question, with no restart."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from chatbot.service import ChatService
from finetune.models import ModelNotFoundError, load_generator
from finetune.registry import Registry


def _register_variant(settings, tiny_llm_dir, tmp_path):
    """A 'full' version: the tiny model with its embedding shifted, so it is told apart by its weights."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llm_dir)
    with torch.no_grad():
        model.get_input_embeddings().weight.add_(1.0)
    out = tmp_path / "variant"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_llm_dir).save_pretrained(out)
    return Registry(settings).add(
        out, kind="full", base_model=str(tiny_llm_dir), manifest={}, settings={}, metrics={}
    )


def _embedding(llm):
    """The input embeddings the backend really serves: from the transformers model, or read back from the
    GGUF file the llama.cpp engine loaded."""
    if hasattr(llm, "generator"):
        return llm.generator.model.get_input_embeddings().weight.detach().clone()
    from gguf import GGUFReader
    from gguf.quants import dequantize

    tensor = next(t for t in GGUFReader(llm.engine.path).tensors if t.name == "token_embd.weight")
    return torch.from_numpy(dequantize(tensor.data, tensor.tensor_type).copy()).reshape(-1, tensor.shape[0])


def _with_engine(settings, engine):
    return settings.model_copy(update={"models": settings.models.model_copy(update={"engine": engine})})


@pytest.mark.parametrize("engine", ["transformers", "llama.cpp"])
def test_promote_and_rollback_switch_the_model_without_restart(settings, tiny_llm_dir, tmp_path, engine):
    settings = _with_engine(settings, engine)
    service = ChatService(settings)
    base = _embedding(service.llm)
    version = _register_variant(settings, tiny_llm_dir, tmp_path)
    assert torch.equal(_embedding(service.llm), base)  # registered, not promoted: still the base model

    Registry(settings).promote(version.id)
    promoted = service.llm
    assert type(promoted).__name__ == ("LocalChatModel" if engine == "transformers" else "EngineChatModel")
    assert torch.allclose(_embedding(promoted), base + 1.0, atol=0.02)  # q8_0 in the engine's file
    assert promoted.answering_model().endswith(f"@{version.id}")
    assert service.llm is promoted  # not reloaded while nothing changes

    Registry(settings).rollback()
    assert torch.equal(_embedding(service.llm), base)


def test_version_setting_base_and_explicit_and_unknown(settings, tiny_llm_dir, tmp_path):
    version = _register_variant(settings, tiny_llm_dir, tmp_path)
    Registry(settings).promote(version.id)
    as_base = settings.model_copy(update={"models": settings.models.model_copy(update={"version": "base"})})
    assert load_generator(as_base).name == str(tiny_llm_dir)
    service = ChatService(settings)
    assert service.llm_for("base").answering_model() == str(tiny_llm_dir)
    assert service.llm_for(version.id).answering_model().endswith(version.id)
    unknown = settings.model_copy(update={"models": settings.models.model_copy(update={"version": "v9999"})})
    with pytest.raises(ModelNotFoundError, match="models.version = 'v9999'"):
        load_generator(unknown)


def test_external_lora_adapter_is_merged_on_the_generator(settings, tiny_llm_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(tiny_llm_dir)
    peft_model = get_peft_model(
        base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)
    expected = peft_model.merge_and_unload().model.layers[0].self_attn.q_proj.weight.detach().clone()

    with_adapter = settings.model_copy(
        update={"models": settings.models.model_copy(update={"adapter": str(adapter_dir), "version": "base"})}
    )
    loaded = load_generator(with_adapter)
    assert torch.allclose(loaded.model.model.layers[0].self_attn.q_proj.weight, expected, atol=1e-6)
    missing = with_adapter.model_copy(
        update={"models": with_adapter.models.model_copy(update={"adapter": str(tmp_path)})}
    )
    with pytest.raises(ModelNotFoundError, match="models.adapter"):
        load_generator(missing)


def test_versions_picked_in_the_browser_are_loaded_once_and_not_without_bound(
    settings, tiny_llm_dir, tmp_path
):
    """The current version asked by its id is the same loaded model; versions picked one after another stay
    loaded up to MAX_LOADED_VERSIONS (the least recently used closed first, never the current one); one
    collection answers with two versions in turn without its chains being built again."""
    from chatbot import service as service_module
    from retrieval.collection import Collection

    settings = _with_engine(settings, "transformers")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "hours.md").write_text("The library opens at nine.", encoding="utf-8")
    Collection.open(settings, settings.chat.collection).sync(tmp_path / "docs")
    ids = []
    for n in range(3):
        version = _register_variant(settings, tiny_llm_dir, tmp_path / f"v{n}")
        ids.append(version.id)
    Registry(settings).promote(ids[0])
    service = ChatService(settings)
    current = service.llm
    assert service.llm_for(ids[0]) is current  # "current" and its id: one model
    second = service.llm_for(ids[1])
    chain = service._chain(settings.chat.collection, second)
    assert service._chain(settings.chat.collection, current) is not chain
    assert service._chain(settings.chat.collection, second) is chain  # kept, not rebuilt in turn
    service.llm_for(ids[2])
    base = service.llm_for("base")
    assert service_module.MAX_LOADED_VERSIONS == 3 and len(service._llms) == 3
    assert service.llm is current  # the current version was not the one closed
    assert service.llm_for(ids[1]) is not second  # the least recently used was: loaded again when asked
    assert ids[2] not in service._llms and service.llm_for("base") is base  # then the next least recent
