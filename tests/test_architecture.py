"""The package structure holds: dependencies point one way (docs/architecture.md).

retrieval/ imports neither of the others; finetune/ imports retrieval/ only; chatbot/ composes both. Every
import counts, including those inside functions and under ``TYPE_CHECKING``: an import that goes the wrong way
fails here, naming the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"retrieval": {"chatbot", "finetune"}, "finetune": {"chatbot"}}


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import statement in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no Python files under {package}/"
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in files
        for line, name in imported_packages(path)
        if name in FORBIDDEN[package]
    ]
    assert wrong == [], f"{package}/ must not import {sorted(FORBIDDEN[package])}: " + "; ".join(wrong)


def test_the_check_sees_imports_inside_functions_and_type_checking(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from chatbot.settings import Settings\n"
        "def f():\n    import finetune.models\n"
    )
    assert imported_packages(sample) == [(1, "typing"), (3, "chatbot"), (5, "finetune")]


def test_one_model_loading_module():
    """Only finetune/models.py calls from_pretrained on causal LMs or converts the embedded GGUF file; the
    embedding model loads in retrieval/embedding.py only."""
    callers = {
        str(p.relative_to(ROOT))
        for package in ("chatbot", "finetune", "retrieval")
        for p in (ROOT / package).rglob("*.py")
        if "AutoModelForCausalLM.from_pretrained" in p.read_text(encoding="utf-8")
    }
    # export.load_exported reads an exported directory back (a plain model, no settings involved)
    assert callers == {"finetune/models.py", "finetune/export.py"}
    st_callers = {
        str(p.relative_to(ROOT))
        for package in ("chatbot", "finetune", "retrieval")
        for p in (ROOT / package).rglob("*.py")
        if "SentenceTransformer(" in p.read_text(encoding="utf-8")
    }
    assert st_callers == {"retrieval/embedding.py"}
