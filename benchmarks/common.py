"""What every benchmark script records beside its figures, and how it hands them over.

Run the scripts as ``python benchmarks/<name>.py``: this folder is then first on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def machine() -> dict[str, str]:
    """The machine and how busy it was: the 2 cores are shared, and a load average over 2 means contention."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": str(os.cpu_count()),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def emit(results: dict[str, Any], out: Path | None) -> None:
    """Print ``results`` as JSON (with the machine) and write them to ``out`` when given."""
    text = json.dumps({**results, "machine": results.get("machine") or machine()}, indent=1)
    print(text)
    if out:
        Path(out).write_text(text, encoding="utf-8")
