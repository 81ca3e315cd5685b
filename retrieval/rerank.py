"""Optional cross-encoder reranking of the fused candidates (setting ``retrieval.reranker``)."""

from __future__ import annotations

import dataclasses
import logging
from functools import lru_cache
from typing import TYPE_CHECKING

from retrieval.embedding import torch_device
from retrieval.types import Hit

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder

    from retrieval.config import Host

log = logging.getLogger(__name__)


@lru_cache(maxsize=2)
def _load(source: str, device: str | None) -> CrossEncoder:
    from sentence_transformers import CrossEncoder

    log.info("Loading reranker %s", source)
    return CrossEncoder(source, device=device)


def rerank(settings: Host, query: str, hits: list[Hit]) -> list[Hit]:
    """Reorder ``hits`` by the cross-encoder's relevance score (kept as ``score``; the fused score is kept
    in ``metadata['fused']``)."""
    if not hits or not settings.retrieval.reranker:
        return hits
    model = _load(settings.retrieval.reranker, torch_device(settings.models.device))
    scores = model.predict([(query, h.text) for h in hits], show_progress_bar=False)
    rescored = [
        dataclasses.replace(h, score=float(s), metadata={**h.metadata, "fused": h.score})
        for h, s in zip(hits, scores, strict=True)
    ]
    return sorted(rescored, key=lambda h: -h.score)
