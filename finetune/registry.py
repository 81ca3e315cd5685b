"""The model registry: every trained model is a version; one of them is current.

Layout under ``<data_dir>/models/registry/``::

    versions/v0001/version.json   id, kind, base model, date, settings, metrics, parent, note
    versions/v0001/manifest.json  content hashes of the data it was trained on (see finetune.data)
    versions/v0001/model/         the LoRA adapter (or full model) and the tokenizer
    current                       the current version's id; replaced atomically (write temp, fsync, rename)
    promoted.json                 the stack of promotions, so rollback returns to the one before

A version directory is built under a temporary name and renamed into place, so a reader never sees half a
version. Readers take no lock: ``current()`` reads one small file, cheap enough to call per request, which is
how the chat switches versions without a restart (reload when ``current().id`` changes). The registry stores
and lists versions only; ``finetune.models`` loads them.
"""

from __future__ import annotations

import json
import logging
import shutil
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrieval.files import exclusive, staged_dir, write_atomic

if TYPE_CHECKING:
    from finetune.config import Host

log = logging.getLogger(__name__)

# The grounded-QA adapters that ship with the project (docs/model-card.md), one per embedded base at most:
# version "shipped" is the one trained on the configured generator, current whenever nothing else has been
# promoted. The default base's is in SHIPPED_DIR, another base's beside it, named after the base.
SHIPPED_ID = "shipped"
SHIPPED_DIR = Path(__file__).resolve().parent / "adapters" / "grounded-qa"


# What a checkpoint holds beside the weights for the trainer alone (`--resume` reads them from the run's
# checkpoint, never from a version): pickles of the TrainingArguments, the optimizer and scheduler, the random
# states. A version is handed on (`models export`, `models ship`), so whatever folder it is made from holds
# none of them
TRAINER_STATE = ("training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state*.pth", "scaler.pt")


def shipped_dir(base_setting: str) -> Path:
    """Where the adapter shipped for the embedded base ``base_setting`` is (or would be) kept."""
    from finetune.models import EMBEDDED

    if base_setting == EMBEDDED:
        return SHIPPED_DIR
    return SHIPPED_DIR.with_name(f"{SHIPPED_DIR.name}-{base_setting.removeprefix('embedded-')}")


class RegistryError(ValueError):
    """Unknown version, nothing to roll back to, or a broken registry entry."""


class CurrentChanged(RegistryError):
    """A conditional promotion found another current version than the one it was made against."""


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


class Registry:
    def __init__(self, settings: Host) -> None:
        self.settings = settings
        self.root = Path(settings.data_dir) / "models" / "registry"
        self.versions_dir = self.root / "versions"

    # ------------------------------------------------------------------------------------------------ reading
    def shipped(self) -> Version | None:
        """The adapter shipped with the project for the configured generator, if there is one."""
        from finetune.models import EMBEDDED_GENERATORS

        generator = self.settings.models.generator
        folder = shipped_dir(generator) if generator in EMBEDDED_GENERATORS else SHIPPED_DIR
        if not (folder / "version.json").is_file():
            return None
        version = self._load(folder)
        return version if version.base_setting == generator else None

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
    def _locked(self) -> AbstractContextManager[None]:
        return exclusive(self.root / ".lock")

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
            with staged_dir(self.versions_dir / vid) as staging:
                shutil.copytree(model_dir, staging / "model", ignore=shutil.ignore_patterns(*TRAINER_STATE))
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
        log.info("registered model version %s (%s)", vid, kind)
        return self.get(vid)

    def _stack(self) -> list[str]:
        path = self.root / "promoted.json"
        return json.loads(path.read_text()) if path.is_file() else []

    def promote(self, version_id: str, *, if_current: str | None | object = ...) -> Version:
        """Make ``version_id`` current (atomically). With ``if_current``, only if the current version is still
        that one (None: the base model), checked under the registry's lock: a retrain must not undo a
        promotion or rollback made while it trained (RegistryError, nothing changed)."""
        version = self.get(version_id)
        with self._locked():
            if if_current is not ... and (now := self.current_id()) != if_current:
                raise CurrentChanged(
                    f"the current version changed from {if_current or 'the base model'} to "
                    f"{now or 'the base model'} (a promotion or rollback) while {version_id} was made from "
                    f"{if_current or 'the base model'}; {version_id} was not promoted"
                )
            stack = self._stack()
            if not stack or stack[-1] != version_id:
                stack.append(version_id)
            write_atomic(self.root / "promoted.json", json.dumps(stack))
            write_atomic(self.root / "current", version_id)
        log.info("model version %s is now current", version_id)
        return version

    def rollback(self) -> Version | None:
        """Go back to the version promoted before the current one (None = back to the base model)."""
        with self._locked():
            stack = self._stack()
            current = self.current_id() if (self.root / "current").is_file() else None
            if current in stack:  # a promotion cut short between its two writes left its id on top: drop it
                stack = stack[: len(stack) - stack[::-1].index(current)]
            if not stack:
                raise RegistryError("no promoted version to roll back from")
            stack.pop()
            write_atomic(self.root / "promoted.json", json.dumps(stack))
            if stack:
                write_atomic(self.root / "current", stack[-1])
            else:
                (self.root / "current").unlink(missing_ok=True)
        return self.current()


def ship(version: Version, figures: dict[str, Any], out: Path | None = None) -> Path:
    """Write ``version`` (a LoRA adapter) as the project's shipped adapter: weights in float16 (half the
    size; the merged weights differ from float32 by < 1e-3 relative), its manifest, and a record with the
    evaluation ``figures``. Built in a temporary directory and swapped in, so a reader never sees half of it."""
    from safetensors.torch import load_file, save_file

    from finetune.models import EMBEDDED_GENERATORS

    if version.kind != "lora":
        raise RegistryError(f"version {version.id} is a {version.kind} model; only a LoRA adapter can ship")
    if version.base_setting not in EMBEDDED_GENERATORS:
        raise RegistryError(
            f"version {version.id} was trained on {version.base_setting}; only an adapter on an embedded base "
            f"({', '.join(EMBEDDED_GENERATORS)}) can ship, as a fresh clone has no other base"
        )
    out = out or shipped_dir(version.base_setting)
    with staged_dir(out) as staging:
        (staging / "model").mkdir()
        weights = load_file(str(version.path / "adapter_model.safetensors"))
        save_file(
            {k: v.half().contiguous() for k, v in weights.items()},
            str(staging / "model" / "adapter_model.safetensors"),
        )
        # the base named as a fresh clone knows it (its embedded setting), not by the folder it was loaded from
        # on the machine that trained it
        config = json.loads((version.path / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = version.base_setting
        (staging / "model" / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        shutil.copy2(version.dir / "manifest.json", staging / "manifest.json")
        record = {
            "id": SHIPPED_ID,
            "kind": "lora",
            "base_model": version.base_setting,
            "base_setting": version.base_setting,
            "created_at": version.created_at,
            "metrics": {**version.metrics, **figures},
            "settings": version.settings,
            "parent": None,
            "note": f"grounded-QA adapter shipped with the project (trained as {version.id}; docs/model-card.md)",
        }
        (staging / "version.json").write_text(json.dumps(record, indent=1, default=str))
    return out
