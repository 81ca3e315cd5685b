"""Fixtures for the retrieval tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml


@pytest.fixture
def config_file(settings, tmp_path: Path) -> Path:
    """A YAML settings file equal to the ``settings`` fixture, for the CLI's --config."""
    path = tmp_path / "settings.yaml"
    data = {
        "data_dir": str(settings.data_dir),
        "models": {
            "embedding": settings.models.embedding,
            "generator": settings.models.generator,
            "device": "cpu",
        },
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path
