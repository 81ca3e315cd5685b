import pytest
import torch

from chatbot.llm import LocalChatModel
from finetune.device import select_device, to_device
from finetune.models import ModelNotFoundError, embedded_gguf_path, load_generator
from retrieval.embedding import embedded_embedding_path


def test_embedded_models_are_installed():
    assert embedded_gguf_path().stat().st_size > 50_000_000
    assert (embedded_embedding_path() / "model.safetensors").is_file()


def test_missing_local_directory_names_the_setting(settings):
    bad = settings.model_copy(
        update={"models": settings.models.model_copy(update={"generator": "./no/such"})}
    )
    with pytest.raises(ModelNotFoundError) as err:
        load_generator(bad)
    text = str(err.value)
    assert "models.generator" in text and "./no/such" in text and "APP_MODELS__GENERATOR" in text


def test_unreachable_hub_id_is_a_clear_error(settings):
    # HF_HUB_OFFLINE=1 (conftest): a hub id that is not cached cannot load; the error says what to do.
    bad = settings.model_copy(
        update={"models": settings.models.model_copy(update={"generator": "no-such-org/no-such-model"})}
    )
    with pytest.raises(ModelNotFoundError, match="no-such-org/no-such-model") as err:
        load_generator(bad)
    assert "local model directory" in str(err.value)


def test_auto_device_is_cpu_here_and_unavailable_device_is_refused():
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert select_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="models.device"):
            select_device("cuda")


def test_inputs_follow_the_model_device(settings):
    gen = load_generator(settings)
    llm = LocalChatModel(generator=gen, generation=settings.generation)
    # Move the model to the meta device: the encoded inputs must go wherever the model is, not to a default.
    gen.model.to("meta")
    from langchain_core.messages import HumanMessage

    batch = llm.encode([HumanMessage("hello")])
    assert batch["input_ids"].device.type == "meta"
    assert batch["attention_mask"].device.type == "meta"
    assert to_device({"x": torch.ones(1), "n": 3}, torch.device("meta"))["n"] == 3
