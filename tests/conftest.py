"""Shared fixtures: tiny random models saved to disk and loaded through the same code path as real ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach a model hub: a hub id that is not cached fails at once instead of timing out.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "The assistant answers questions about the documents of one organisation.",
    "El asistente responde preguntas sobre los documentos de una organización.",
    "Index a folder with chatbot index, then ask a question with chatbot ask.",
    "The library opens at nine in the morning and closes at eight in the evening.",
    "La biblioteca abre a las nueve de la mañana y cierra a las ocho de la tarde.",
    "Sources are cited with numbers in square brackets, like [1] or [2].",
    "user assistant system question answer context source document page",
] * 20


def _train_bpe_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_llm(path: Path, max_positions: int = 512, **config_overrides) -> Path:
    """A 2-layer Llama with random weights and a BPE tokenizer trained on a few sentences (``config_overrides``
    change its LlamaConfig)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _train_bpe_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        **config_overrides,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_embedder(path: Path) -> Path:
    """A 2-layer BERT with mean pooling, saved as a sentence-transformers model directory."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import models as st_models
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=500, special_tokens=specials))
    raw = path / "raw"
    raw.mkdir(parents=True)
    tok.model.save(str(raw))  # writes vocab.txt
    tokenizer = BertTokenizerFast(vocab_file=str(raw / "vocab.txt"), do_lower_case=True)
    tokenizer.model_max_length = 256
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    word = st_models.Transformer(str(raw), max_seq_length=256)
    pooling = st_models.Pooling(word.get_embedding_dimension(), pooling_mode="mean")
    out = path / "model"
    SentenceTransformer(modules=[word, pooling], device="cpu").save(str(out))
    return out


def fine_tuned(source: Path, target: Path) -> Path:
    """``source``'s sentence-transformers model with slightly other weights, saved at ``target``."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(source), device="cpu")
    torch.manual_seed(1)
    with torch.no_grad():
        for weights in model.parameters():
            weights.add_(torch.randn_like(weights) * 0.01)
    model.save(str(target))
    return target


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llm(tmp_path_factory.mktemp("tiny-llm"))


@pytest.fixture(scope="session")
def long_llm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with room for ~8k tokens: random weights rarely emit end-of-text, so it generates for as
    long as ``max_new_tokens`` allows (~8 s for 3,000 tokens here), which tests of stopping need."""
    return build_tiny_llm(tmp_path_factory.mktemp("long-llm"), max_positions=8192)


@pytest.fixture(scope="session")
def tiny_llm_builder():
    """:func:`build_tiny_llm` itself, for a test that needs a variant of the tiny model (``**config_overrides``)."""
    return build_tiny_llm


@pytest.fixture(scope="session")
def tiny_embedder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_embedder(tmp_path_factory.mktemp("tiny-embedder"))


@pytest.fixture(scope="session")
def other_embedder_dir(tiny_embedder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny embedder with slightly other weights (as a short fine-tune leaves it): another model of the
    same width, that only its vectors tell apart."""
    return fine_tuned(tiny_embedder_dir, tmp_path_factory.mktemp("other-embedder") / "model")


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings from the developer's shell (APP_*) never leak into tests."""
    for key in list(os.environ):
        if key.startswith("APP_"):
            monkeypatch.delenv(key)


@pytest.fixture
def settings(tmp_path: Path, tiny_llm_dir: Path, tiny_embedder_dir: Path):
    """Settings of the test profile: tiny models, CPU, a fresh data directory per test."""
    from chatbot.settings import load_settings

    return load_settings(
        data_dir=tmp_path / "var",
        models={"generator": str(tiny_llm_dir), "embedding": str(tiny_embedder_dir), "device": "cpu"},
        generation={"max_new_tokens": 8},
    )


@pytest.fixture
def app_env(tmp_path: Path, tiny_llm_dir: Path, tiny_embedder_dir: Path) -> dict[str, str]:
    """The test profile as APP_* environment variables, for the CLI and the Streamlit app."""
    return {
        "APP_DATA_DIR": str(tmp_path / "var"),
        "APP_MODELS__GENERATOR": str(tiny_llm_dir),
        "APP_MODELS__EMBEDDING": str(tiny_embedder_dir),
        "APP_MODELS__DEVICE": "cpu",
        "APP_GENERATION__MAX_NEW_TOKENS": "8",
    }
