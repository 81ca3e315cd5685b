"""The model registry: every trained model is a version; one of them is current.

Layout under ``<data_dir>/models/registry/``::

    versions/v0001/version.json   id, kind, base model, date, settings, metrics, parent, note
    versions/v0001/manifest.json  content hashes of the data it was trained on (see finetune.data)
    versions/v0001/model/         the LoRA adapter (or full model) and the tokenizer
    current                       the current version's id; replaced atomically (write temp, fsync, rename)
    promoted.json                 the stack of promotions, so rollback returns to the one before

A version directory is built under a temporary name and renamed into place, so a reader never sees half a
version. Readers take no lock: ``current()`` reads one small file, cheap enough to call per request, which is
how the chat switches versions without a restart (reload when ``current().id`` changes).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from chatbot.settings import Settings

log = logging.getLogger(__name__)

# The grounded-QA adapter that ships with the project (docs/model-card.md): version "shipped", current
# whenever nothing else has been promoted and the generator is the embedded one it was trained on.
SHIPPED_ID = "shipped"
SHIPPED_DIR = Path(__file__).resolve().parent / "adapters" / "grounded-qa"


class RegistryError(ValueError):
    """Unknown version, nothing to roll back to, or a broken registry entry."""


@dataclass(frozen=True)
class Version:
    id: str
    dir: Path
    kind: str  # 'lora' | 'full'
    base_model: str  # where the base weights were loaded from (a directory or hub id)
    base_setting: str  # models.generator at training time ('embedded', a hub id or a directory)
    created_at: str
    metrics: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None
    note: str = ""

    @property
    def path(self) -> Path:
        """The model directory: adapter + tokenizer for 'lora', a full model + tokenizer for 'full'."""
        return self.dir / "model"

    @property
    def manifest(self) -> dict[str, Any]:
        path = self.dir / "manifest.json"
        return json.loads(path.read_text()) if path.is_file() else {"items": {}}


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class Registry:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = Path(settings.data_dir) / "models" / "registry"
        self.versions_dir = self.root / "versions"

    # ------------------------------------------------------------------------------------------------ reading
    def shipped(self) -> Version | None:
        """The adapter shipped with the project, when it fits the configured generator."""
        if not (SHIPPED_DIR / "version.json").is_file():
            return None
        version = self._load(SHIPPED_DIR)
        return version if version.base_setting == self.settings.models.generator else None

    def list(self) -> list[Version]:
        shipped = self.shipped()
        found = [shipped] if shipped else []
        if not self.versions_dir.is_dir():
            return found
        for d in sorted(self.versions_dir.iterdir()):
            if d.name.startswith("v") and (d / "version.json").is_file():
                found.append(self._load(d))
        return found

    def get(self, version_id: str) -> Version:
        if version_id == SHIPPED_ID and (shipped := self.shipped()) is not None:
            return shipped
        d = self.versions_dir / version_id
        if not (d / "version.json").is_file():
            known = ", ".join(v.id for v in self.list()) or "none"
            raise RegistryError(f"no model version {version_id!r} (known: {known})")
        return self._load(d)

    def current_id(self) -> str | None:
        """The promoted version; else the shipped adapter (if it fits the generator); else None (base)."""
        try:
            promoted = (self.root / "current").read_text().strip()
        except FileNotFoundError:
            promoted = ""
        if promoted:
            return promoted
        return SHIPPED_ID if self.shipped() is not None else None

    def current(self) -> Version | None:
        """The version the chat should use, or None (use the base model)."""
        vid = self.current_id()
        return self.get(vid) if vid else None

    def _load(self, d: Path) -> Version:
        data = json.loads((d / "version.json").read_text())
        return Version(dir=d, **{k: v for k, v in data.items() if k in Version.__dataclass_fields__})

    # ------------------------------------------------------------------------------------------------ writing
    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def add(
        self,
        model_dir: Path,
        *,
        kind: str,
        base_model: str,
        manifest: dict[str, Any],
        settings: dict[str, Any],
        metrics: dict[str, Any],
        parent: str | None = None,
        note: str = "",
    ) -> Version:
        """Copy ``model_dir`` into a new version (not current until promoted)."""
        with self._locked():
            self.versions_dir.mkdir(parents=True, exist_ok=True)
            numbers = [int(d.name[1:]) for d in self.versions_dir.iterdir() if d.name[1:].isdigit()]
            vid = f"v{max(numbers, default=0) + 1:04d}"
            staging = Path(tempfile.mkdtemp(prefix=f".{vid}-", dir=self.versions_dir))
            try:
                shutil.copytree(model_dir, staging / "model")
                (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
                record = {
                    "id": vid,
                    "kind": kind,
                    "base_model": base_model,
                    "base_setting": self.settings.models.generator,
                    "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "metrics": metrics,
                    "settings": settings,
                    "parent": parent,
                    "note": note,
                }
                (staging / "version.json").write_text(json.dumps(record, indent=1, default=str))
                os.replace(staging, self.versions_dir / vid)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        log.info("registered model version %s (%s)", vid, kind)
        return self.get(vid)

    def _stack(self) -> list[str]:
        path = self.root / "promoted.json"
        return json.loads(path.read_text()) if path.is_file() else []

    def promote(self, version_id: str) -> Version:
        """Make ``version_id`` current (atomically)."""
        version = self.get(version_id)
        with self._locked():
            stack = self._stack()
            if not stack or stack[-1] != version_id:
                stack.append(version_id)
            _write_atomic(self.root / "promoted.json", json.dumps(stack))
            _write_atomic(self.root / "current", version_id)
        log.info("model version %s is now current", version_id)
        return version

    def rollback(self) -> Version | None:
        """Go back to the version promoted before the current one (None = back to the base model)."""
        with self._locked():
            stack = self._stack()
            if not stack:
                raise RegistryError("no promoted version to roll back from")
            stack.pop()
            _write_atomic(self.root / "promoted.json", json.dumps(stack))
            if stack:
                _write_atomic(self.root / "current", stack[-1])
            else:
                (self.root / "current").unlink(missing_ok=True)
        return self.current()


def base_source(settings: Settings, version: Version | None) -> tuple[str, dict[str, Any]]:
    """Where the base weights of ``version`` are (the configured generator when None)."""
    from chatbot.models import ensure_embedded_generator, resolve_generator

    if version is None:
        return resolve_generator(settings)
    if version.kind == "full":
        return str(version.path), {}
    if Path(version.base_model).exists():
        return version.base_model, {}
    if version.base_setting == "embedded":  # shipped, or data_dir moved: the converted embedded model
        return str(ensure_embedded_generator(settings)), {}
    if not version.base_model.startswith(("/", ".")):
        return version.base_model, {}  # a hub id
    raise RegistryError(f"version {version.id}: its base model {version.base_model} no longer exists")


def load_causal_lm(source: str, dtype: Any = None, **kwargs: Any) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_pretrained`` without a stale GGUF marker.

    The embedded model converted by ``chatbot.models`` has plain float weights, but its config.json keeps the
    GGUF ``quantization_config``; transformers then treats it as quantized and the Trainer refuses to train
    it (and a merged export would carry the marker on). The weights are plain, so the marker is dropped.
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


def load_tokenizer(settings: Settings, version: Version | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer saved with ``version`` (None: the configured generator's), with a pad token."""
    from transformers import AutoTokenizer

    if version is not None and (version.path / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(version.path)
    elif version is not None:  # an adapter saved without its tokenizer (the shipped one): the base's
        source, kwargs = base_source(settings, version)
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    else:
        source, kwargs = base_source(settings, None)
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_version_for_inference(
    settings: Settings, version: Version | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Base + adapter of ``version`` (default: the current one, else the base model), merged, in eval mode,
    on the configured device and dtype."""
    from chatbot.device import select_device, select_dtype

    version = version if version is not None else Registry(settings).current()
    device = select_device(settings.models.device)
    dtype = select_dtype(settings.models.dtype, device)
    source, kwargs = base_source(settings, version)
    model = load_causal_lm(source, dtype, **kwargs)
    tokenizer = load_tokenizer(settings, version)
    if version is not None and version.kind == "lora":
        from peft import PeftModel

        # Merged for inference: no adapter overhead per token, and a plain model for the chat layer.
        model = PeftModel.from_pretrained(model, version.path).merge_and_unload()
    return model.to(device).eval(), tokenizer


class CurrentModel:
    """The current version's model for a long-running app: ``get()`` reloads only when the registry's current
    pointer has changed (one small file read per call), so promote/rollback need no restart.

        current = CurrentModel(settings)            # e.g. in st.cache_resource
        model, tokenizer, version_id = current.get()  # per request
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loaded: tuple[Any, Any, str | None] | None = None

    def get(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str | None]:
        registry = Registry(self.settings)
        vid = registry.current_id()
        if self._loaded is None or self._loaded[2] != vid:
            version = registry.get(vid) if vid else None
            model, tokenizer = load_version_for_inference(self.settings, version)
            self._loaded = (model, tokenizer, vid)
            log.info("loaded model %s", vid or "base")
        return self._loaded


def ship(version: Version, figures: dict[str, Any], out: Path | None = None) -> Path:
    """Write ``version`` (a LoRA adapter) as the project's shipped adapter: weights in float16 (half the
    size; the merged weights differ from float32 by < 1e-3 relative), its manifest, and a record with the
    evaluation ``figures``. Built in a temporary directory and swapped in, so a reader never sees half of it."""
    from safetensors.torch import load_file, save_file

    if version.kind != "lora":
        raise RegistryError(f"version {version.id} is a {version.kind} model; only a LoRA adapter can ship")
    out = out or SHIPPED_DIR
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        (staging / "model").mkdir()
        weights = load_file(str(version.path / "adapter_model.safetensors"))
        save_file(
            {k: v.half().contiguous() for k, v in weights.items()},
            str(staging / "model" / "adapter_model.safetensors"),
        )
        shutil.copy2(version.path / "adapter_config.json", staging / "model" / "adapter_config.json")
        shutil.copy2(version.dir / "manifest.json", staging / "manifest.json")
        record = {
            "id": SHIPPED_ID,
            "kind": "lora",
            "base_model": "embedded",
            "base_setting": "embedded",
            "created_at": version.created_at,
            "metrics": {**version.metrics, **figures},
            "settings": version.settings,
            "parent": None,
            "note": f"grounded-QA adapter shipped with the project (trained as {version.id}; docs/model-card.md)",
        }
        (staging / "version.json").write_text(json.dumps(record, indent=1, default=str))
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
