"""Keep a collection in sync with a folder: sync again shortly after files are added, changed or deleted."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from retrieval.errors import CollectionLockedError
from retrieval.plan import MassDeleteError

if TYPE_CHECKING:
    from retrieval.collection import Collection
    from retrieval.types import SyncReport

log = logging.getLogger(__name__)


class _Changes:
    """Set by file-system events; the watcher waits until they have been quiet for ``debounce`` seconds."""

    def __init__(self) -> None:
        self.last = 0.0
        self.event = threading.Event()

    def touch(self) -> None:
        self.last = time.monotonic()
        self.event.set()


def watch(
    collection: Collection,
    folder: Path,
    on_report: Callable[[SyncReport], None],
    stop: threading.Event,
    debounce: float = 1.0,
    poll_seconds: float = 30.0,
    retry_seconds: float = 5.0,
) -> None:
    """Sync ``folder`` after each burst of changes until ``stop`` is set. A sync that fails is logged and
    tried again ``retry_seconds`` later (files that fail are only reported: they never fail a sync).

    Uses watchdog's native file-system events; without watchdog it falls back to a sync every
    ``poll_seconds`` (cheap when nothing changed: files are only hashed, never re-embedded).
    """
    folder = Path(folder).resolve()
    changes = _Changes()
    refused = ""  # the last mass deletion refused, logged once
    observer = _start_observer(folder, changes, collection.root)
    try:
        while not stop.is_set():
            if observer is None:
                changes.event.wait(poll_seconds)
                changes.touch()
            elif not changes.event.wait(0.2):
                continue
            if time.monotonic() - changes.last < debounce:
                stop.wait(0.1)
                continue
            changes.event.clear()
            if stop.is_set():
                break
            try:
                on_report(collection.sync(folder))
                refused = ""
            except MassDeleteError as exc:  # an unmounted folder, say: wait for it to change, say it once
                if str(exc) != refused:
                    log.error("%s; waiting for the folder to change", exc)
                refused = str(exc)
            except CollectionLockedError as exc:
                log.warning("%s; retrying in %.0f s", exc, max(debounce, 1.0))
                stop.wait(max(debounce, 1.0))
                changes.touch()
            except Exception as exc:  # a full disk, a folder gone for a moment: report it, keep watching
                log.error("sync of %s failed: %s; retrying in %.0f s", folder, exc, retry_seconds)
                stop.wait(retry_seconds)
                changes.touch()
    finally:
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)


def _start_observer(folder: Path, changes: _Changes, ignored: Path):
    try:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer
    except ImportError:
        log.warning("watchdog is not installed (pip install watchdog): polling the folder instead")
        return None
    ignored = ignored.resolve()

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event) -> None:
            if event.event_type in ("opened", "closed_no_write"):
                return
            paths = [Path(str(p)) for p in (event.src_path, getattr(event, "dest_path", "")) if p]
            if all(ignored in p.parents or p == ignored for p in paths):
                return  # the collection's own files, when the data dir sits inside the watched folder
            changes.touch()

    observer = Observer()
    observer.schedule(Handler(), str(folder), recursive=True)
    observer.start()
    return observer
