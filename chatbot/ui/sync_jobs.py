"""Work that outlives one Streamlit rerun: collection syncs in background threads.

A sync runs in a thread of the server process, so the page stays responsive and polls its progress; the jobs
live in ``st.cache_resource`` (one table per process), so a page reload finds a running sync again.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from chatbot.settings import Settings
from chatbot.uploads import allowed_folder
from retrieval.types import SyncReport

log = logging.getLogger(__name__)


@dataclass
class SyncJob:
    collection: str
    folder: Path
    started: float = field(default_factory=time.time)
    done: int = 0
    total: int = 0
    current: str = ""
    report: SyncReport | None = None
    error: str | None = None
    thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def progress(self, done: int, total: int, path: str) -> None:
        self.done, self.total, self.current = done, total, path


class SyncJobs:
    """The sync jobs of this process, one at most per collection."""

    def __init__(self) -> None:
        self._jobs: dict[str, SyncJob] = {}
        self._lock = threading.Lock()

    def get(self, collection: str) -> SyncJob | None:
        return self._jobs.get(collection)

    def start(
        self, settings: Settings, collection: str, folder: Path, allow_mass_delete: bool = False
    ) -> SyncJob:
        """Start syncing ``collection`` from ``folder``; if one is already running, return that one. A folder
        the app may not sync (see chatbot.uploads.allowed_folder) raises FolderNotAllowed. A sync that would
        delete most files or switch folders is refused (the job's error says so) unless ``allow_mass_delete``."""
        folder = allowed_folder(settings, collection, folder)
        with self._lock:
            job = self._jobs.get(collection)
            if job is not None and job.running:
                return job
            job = SyncJob(collection, folder)
            job.thread = threading.Thread(
                target=self._run, args=(settings, job, allow_mass_delete), daemon=True, name="sync"
            )
            self._jobs[collection] = job
            job.thread.start()
            return job

    @staticmethod
    def _run(settings: Settings, job: SyncJob, allow_mass_delete: bool) -> None:
        from retrieval.collection import Collection

        try:
            job.report = Collection.open(settings, job.collection).sync(
                job.folder, progress=job.progress, allow_mass_delete=allow_mass_delete
            )
        except Exception as exc:  # reported on the page; a sync never takes the app down
            log.exception("sync of %s failed", job.collection)
            job.error = str(exc)


@st.cache_resource(show_spinner=False)
def sync_jobs() -> SyncJobs:
    """The process-wide table of sync jobs (kept across reruns and page reloads)."""
    return SyncJobs()
