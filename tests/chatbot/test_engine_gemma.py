"""Gemma 3 on the llama.cpp engine: a tiny random Gemma 3, converted with metadata laid out as in the embedded
Gemma file, decodes the tokens transformers decodes, past its sliding window."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from finetune.gguf_export import (
    ConversionError,
    _bpe_vocab,
    architecture,
    copy_metadata,
    unsupported,
    write_gguf,
)
from finetune.llamacpp import Engine, Request

pytest.importorskip(
    "ik_llama_cpp", reason="the llama.cpp engine is installed with the project on Linux x86_64"
)

WINDOW = 16  # the tiny model's sliding window: the prompt below is longer


@pytest.fixture(scope="module")
def tiny_gemma(tiny_llm_dir):
    """6 layers (5 sliding, 1 full, as Gemma 3 alternates them), random weights and random norms (Gemma stores
    them as an offset from 1), the tiny Llama's tokenizer."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tok = AutoTokenizer.from_pretrained(tiny_llm_dir)
    config = Gemma3TextConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=32,
        query_pre_attn_scalar=32,
        sliding_window=WINDOW,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    config.architectures = ["Gemma3ForCausalLM"]
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, weights in model.named_parameters():
            if name.endswith("norm.weight"):
                weights.copy_(torch.randn_like(weights) * 0.3)
    return model, tok


def _template(model, tokenizer_dir, path):
    """A GGUF file with the embedded Gemma file's keys, for the tiny model's sizes (and its BPE vocabulary)."""
    from gguf import GGUFWriter

    config = model.config
    vocab = _bpe_vocab(tokenizer_dir)
    writer = GGUFWriter(str(path), "gemma3")
    writer.add_name("tiny gemma")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_sliding_window(config.sliding_window)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    writer.add_token_merges(vocab["merges"])
    writer.add_bos_token_id(config.bos_token_id)
    writer.add_eos_token_id(config.eos_token_id)
    writer.add_add_bos_token(False)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gemma_is_refused_without_its_template(tiny_gemma, tiny_llm_dir, tmp_path):
    model, _ = tiny_gemma
    assert "Gemma 3" in unsupported(model.config, tiny_llm_dir)
    with pytest.raises(ConversionError, match="Gemma 3"):
        write_gguf(model, tiny_llm_dir, tmp_path / "tiny.gguf", "f32")


def test_a_converted_gemma_decodes_the_tokens_transformers_decodes(tiny_gemma, tiny_llm_dir, tmp_path):
    model, tok = tiny_gemma
    template = _template(model, tiny_llm_dir, tmp_path / "template.gguf")
    kept = copy_metadata(template, tmp_path / "kept.gguf")  # what the embedded conversion keeps
    assert architecture(kept) == "gemma3"
    path = write_gguf(model, None, tmp_path / "tiny-gemma.f32.gguf", "f32", template=kept)
    assert architecture(path) == "gemma3"

    ids = tok("Index a folder with chatbot index, then ask a question about the library and the museum")[
        "input_ids"
    ]
    assert len(ids) > WINDOW
    with torch.no_grad():
        expected = model.generate(
            torch.tensor([ids]), max_new_tokens=24, min_new_tokens=24, do_sample=False, pad_token_id=0
        )[0, len(ids) :].tolist()
        first = model(torch.tensor([ids])).logits[0, -1].numpy()
    seen: list[np.ndarray] = []

    def greedy(logits: np.ndarray, answer: list[int]) -> int:
        seen.append(logits.copy())
        return int(np.argmax(logits))

    engine = Engine(path, window=256, slots=1)
    try:
        assert engine.n_vocab == model.config.vocab_size
        got = list(engine.submit(Request(ids, greedy, 24, frozenset())).tokens())
    finally:
        engine.close()
    np.testing.assert_allclose(seen[0], first, atol=2e-3)  # the same logits, not only the same choice
    assert got == expected
