"""A Llama-family or Gemma 3 transformers model (a registry version merged into its base) as a GGUF file for
llama.cpp.

    reason = unsupported(config, tokenizer_dir)         # None when the model can be converted
    write_gguf(model, tokenizer_dir, out, "q8_0", template=embedded_gguf_path())

The tensors are the model's own, renamed to llama.cpp's names, with the query/key rows permuted to the rotary
layout llama.cpp uses (the inverse of what transformers does when it loads a GGUF file; Gemma's need no
permutation, and its norms are stored as llama.cpp's converter stores them, plus one), quantised by the
``gguf`` package (ggml's reference quantisation, in numpy). The metadata comes from ``template``, a GGUF
file of the same base model (the embedded SmolLM2 file, or the metadata kept from the embedded Gemma 3 file:
architecture, tokenizer and chat template as llama.cpp expects them), or, for any other Llama-family base,
from the model's config and its byte-level BPE ``tokenizer.json``. Anything else (other architectures, Gemma
without its template, rope scaling, SentencePiece vocabularies without a template) is refused with the
reason, and the chat stays on transformers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def _types() -> tuple[dict[str, Any], dict[str, int]]:
    from gguf import GGMLQuantizationType as T

    quant = {"f32": T.F32, "f16": T.F16, "q8_0": T.Q8_0, "q4_0": T.Q4_0, "q4_1": T.Q4_1}
    return quant, {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7}  # llama_ftype (llama.h)


QUANT, FILE_TYPES = _types()
GEMMA_ARCHITECTURES = ("Gemma3ForCausalLM",)
ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", *GEMMA_ARCHITECTURES)

_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_GEMMA_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "pre_feedforward_layernorm.weight": "ffn_norm.weight",
    "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_GLOBAL = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


class ConversionError(RuntimeError):
    """The model cannot be written as GGUF (unsupported architecture or tokenizer, or a failed quantisation)."""


def unsupported(config: Any, tokenizer_dir: Path | None, template: Path | None = None) -> str | None:
    """Why ``config`` cannot be converted, or None when it can."""
    archs = list(getattr(config, "architectures", None) or [])
    if not set(archs) & set(ARCHITECTURES):
        return f"architecture {archs or '?'} (the engine converts {', '.join(ARCHITECTURES)})"
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return "attention or MLP biases"
    if is_gemma(config) and template is None:
        return "Gemma 3 converts only with its original GGUF file's metadata (the embedded-gemma3-270m base)"
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    kinds = [part for part in rope.values() if isinstance(part, dict)] if is_gemma(config) else [rope]
    for part in kinds:  # Gemma 3: one set per kind of layer (sliding and full attention)
        kind = part.get("rope_type", part.get("type", "default")) if isinstance(part, dict) else "default"
        if kind not in ("default", None):
            return f"rope scaling {kind!r}"
    if template is None:
        vocab = _bpe_vocab(tokenizer_dir) if tokenizer_dir else None
        if vocab is None:
            return "its tokenizer is not a byte-level BPE tokenizer.json"
    return None


def is_gemma(config: Any) -> bool:
    return bool(set(getattr(config, "architectures", None) or []) & set(GEMMA_ARCHITECTURES))


def _rope_theta(config: Any) -> float:
    rope = getattr(config, "rope_parameters", None)
    if isinstance(rope, dict) and "rope_theta" in rope:
        return float(rope["rope_theta"])
    return float(getattr(config, "rope_theta", 10000.0))


def _permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """transformers' half-split rotary layout -> llama.cpp's interleaved one (per head, rows reordered)."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def gguf_tensors(state: dict[str, Any], config: Any) -> dict[str, np.ndarray]:
    """The model's weights under llama.cpp's tensor names, float32, q/k permuted (Llama) or norms plus one
    (Gemma: transformers computes ``x * (1 + w)``, llama.cpp ``x * w``)."""
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    gemma = is_gemma(config)
    layer_names = _GEMMA_LAYER if gemma else _LAYER
    out: dict[str, np.ndarray] = {}
    for name, tensor in state.items():
        array = tensor.detach().to("cpu").float().numpy()
        if gemma and name.endswith("norm.weight"):
            array = array + 1.0
        if name in _GLOBAL:
            if name == "lm_head.weight" and getattr(config, "tie_word_embeddings", False):
                continue
            out[_GLOBAL[name]] = array
            continue
        parts = name.split(".")  # model.layers.<i>.<rest>
        if parts[:2] != ["model", "layers"] or ".".join(parts[3:]) not in layer_names:
            if name.endswith("rotary_emb.inv_freq"):
                continue
            raise ConversionError(f"unexpected weight {name}")
        rest = ".".join(parts[3:])
        if rest == "self_attn.q_proj.weight" and not gemma:
            array = _permute(array, n_head)
        elif rest == "self_attn.k_proj.weight" and not gemma:
            array = _permute(array, n_kv)
        out[f"blk.{parts[2]}.{layer_names[rest]}"] = np.ascontiguousarray(array)
    return out


def _bpe_vocab(tokenizer_dir: Path) -> dict[str, Any] | None:
    """tokens, token types and merges of a byte-level BPE ``tokenizer.json``; None for any other kind."""
    path = Path(tokenizer_dir) / "tokenizer.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    model = data.get("model") or {}
    pre = json.dumps(data.get("pre_tokenizer") or {})
    if model.get("type") != "BPE" or "ByteLevel" not in pre:
        return None
    vocab: dict[str, int] = dict(model.get("vocab") or {})
    special: set[int] = set()
    for added in data.get("added_tokens") or []:
        vocab[added["content"]] = added["id"]
        if added.get("special"):
            special.add(added["id"])
    size = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(size)]
    for text, i in vocab.items():
        tokens[i] = text
    types = [3 if i in special else 1 for i in range(size)]  # 3: control, 1: normal
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    return {"tokens": tokens, "types": types, "merges": merges}


def _metadata_from_config(writer: Any, config: Any, tokenizer_dir: Path) -> None:
    vocab = _bpe_vocab(tokenizer_dir)
    if vocab is None:
        raise ConversionError(f"{tokenizer_dir}: not a byte-level BPE tokenizer.json")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_name(Path(str(getattr(config, "_name_or_path", "") or "model")).name or "model")
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_head_count(int(config.num_attention_heads))
    writer.add_head_count_kv(int(config.num_key_value_heads or config.num_attention_heads))
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_rope_dimension_count(int(head_dim))
    if head_dim * config.num_attention_heads != config.hidden_size:
        writer.add_key_length(int(head_dim))
        writer.add_value_length(int(head_dim))
    writer.add_vocab_size(len(vocab["tokens"]))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    writer.add_token_merges(vocab["merges"])
    for key, value in (
        ("bos", config.bos_token_id),
        ("eos", config.eos_token_id),
        ("pad", config.pad_token_id),
    ):
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            getattr(writer, f"add_{key}_token_id")(int(value))
    writer.add_add_bos_token(False)  # the engine is handed token ids, never text to tokenise
    config_file = Path(tokenizer_dir) / "tokenizer_config.json"
    template = json.loads(config_file.read_text()).get("chat_template") if config_file.is_file() else None
    if isinstance(template, str):
        writer.add_chat_template(template)


def architecture(path: Path) -> str:
    """A GGUF file's ``general.architecture`` (llama.cpp's name: 'llama', 'gemma3')."""
    from gguf import GGUFReader

    field = GGUFReader(path).fields.get("general.architecture")
    return str(field.contents()) if field is not None else "llama"


def copy_metadata(source: Path, out: Path) -> Path:
    """A GGUF file holding ``source``'s metadata and no tensors: the template that later conversions of the same
    base model take their metadata from, when ``source`` itself is not kept."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(out), architecture(source))
    _metadata_from_template(writer, source)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _metadata_from_template(writer: Any, template: Path) -> None:
    """Every key of ``template`` (architecture, hyper-parameters, tokenizer, chat template) but its file type."""
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(template)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        if key == "general.quantization_version":
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub_type=sub)


def write_gguf(
    model: PreTrainedModel,
    tokenizer_dir: Path | None,
    out: Path,
    quantization: str = "q8_0",
    template: Path | None = None,
) -> Path:
    """Write ``model`` to ``out`` as GGUF, its matrices quantised to ``quantization`` (a key of :data:`QUANT`;
    norms stay float32, and a matrix whose rows do not split into the format's blocks stays float16).

    ``out``'s folder must exist; the file appears only when complete (written beside it, then renamed)."""
    from gguf import GGUFWriter

    if quantization not in QUANT:
        raise ConversionError(f"quantization {quantization!r}: choose one of {', '.join(QUANT)}")
    reason = unsupported(model.config, tokenizer_dir, template)
    if reason:
        raise ConversionError(f"cannot convert to GGUF: {reason}")
    out = Path(out)
    part = out.with_name(f".{out.name}.tmp")
    try:
        writer = GGUFWriter(str(part), architecture(template) if template is not None else "llama")
        if template is not None:
            _metadata_from_template(writer, template)
        else:
            _metadata_from_config(writer, model.config, tokenizer_dir)  # type: ignore[arg-type]
        writer.add_file_type(FILE_TYPES[quantization])
        writer.add_quantization_version(2)
        for name, array in gguf_tensors(model.state_dict(), model.config).items():
            data, qtype = _quantized(array, quantization)
            writer.add_tensor(name, data, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with open(part, "rb") as handle:
            os.fsync(handle.fileno())
        part.replace(out)
    finally:
        part.unlink(missing_ok=True)
    return out


def _quantized(array: np.ndarray, quantization: str) -> tuple[np.ndarray, Any]:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants

    if array.ndim == 1:
        return array.astype(np.float32), GGMLQuantizationType.F32
    qtype = QUANT[quantization]
    if array.shape[-1] % GGML_QUANT_SIZES[qtype][0]:
        qtype = GGMLQuantizationType.F16
    if qtype == GGMLQuantizationType.F32:
        return array.astype(np.float32), qtype
    if qtype == GGMLQuantizationType.F16:
        return array.astype(np.float16), qtype
    return quants.quantize(array, qtype), qtype
