"""Memory and first-search time of one process serving several collections (as the chat server does).

    python benchmarks/open_collections.py --data-dir var --collections sample docs

Every collection is opened and searched once, in turn; the process's resident memory is read at the end.
The embedding model is loaded by the first search and shared by the others (``retrieval.embedding``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import emit

from chatbot.settings import load_settings
from retrieval.collection import Collection


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("var"))
    parser.add_argument("--collections", nargs="+", required=True)
    parser.add_argument("--query", default="¿Dónde se guardan las conversaciones?")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    settings = load_settings(data_dir=args.data_dir, models={"device": "cpu"})
    first_search = {}
    for name in args.collections:
        started = time.perf_counter()
        Collection.open(settings, name).search(args.query, settings.chat.top_k)
        first_search[name] = round(time.perf_counter() - started, 3)
    emit(
        {"collections": len(args.collections), "first_search_s": first_search, "rss_mib": round(rss_mib())},
        args.out,
    )


if __name__ == "__main__":
    main()
