"""The embedding model, loaded on first use: normalised float32 vectors, token counting for the chunker."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from chatbot.settings import Settings

log = logging.getLogger(__name__)


class Embedder:
    """Wraps the configured sentence-transformers model; counts what it embeds (``embedded``)."""

    def __init__(self, settings: Settings, model: SentenceTransformer | None = None) -> None:
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
                from chatbot.models import load_embedder

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
