"""Settings of the retrieval package (the ``retrieval:`` section of the settings file)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field


class RetrievalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Chunking
    chunk_tokens: int = Field(
        256,
        ge=16,
        le=4096,
        description="Most tokens (of the embedding model's tokenizer) in one chunk. Keep it at or under the "
        "model's max_seq_length (256 for all-MiniLM-L6-v2), which truncates longer input. On squad-es, 256 "
        "beat 200 by 2 points of hit@1.",
    )
    chunk_overlap: int = Field(30, ge=0, description="Tokens shared by consecutive chunks of one section.")
    csv_rows_per_chunk: int = Field(
        20, ge=1, description="Most CSV rows packed into one chunk (each row keeps its column headers)."
    )

    # Embedding
    embed_batch_size: int = Field(32, ge=1, description="Chunks embedded per batch.")
    embed_with_title: bool = Field(
        True, description="Embed 'heading + text' rather than the text alone (search results show the text)."
    )
    query_prefix: str = Field(
        "", description="Prepended to queries before embedding (e.g. 'query: ' for E5)."
    )
    passage_prefix: str = Field("", description="Prepended to chunks before embedding (e.g. 'passage: ').")

    # Bad input
    max_file_mb: float = Field(50.0, gt=0, description="Files larger than this are skipped and reported.")
    max_uncompressed_mb: float = Field(
        200.0,
        gt=0,
        description="Archives (DOCX) that would inflate past this are skipped as decompression bombs.",
    )
    max_compression_ratio: float = Field(
        100.0,
        gt=1,
        description="An archive member compressed more than this (and over 1 MB) is a bomb suspect.",
    )
    max_text_mb: float = Field(
        20.0, gt=0, description="A file whose extracted text exceeds this many MB is skipped and reported."
    )
    skip_hidden: bool = Field(True, description="Ignore files and folders whose name starts with a dot.")
    follow_symlinks: bool = Field(
        False,
        description="Index files that symbolic links point to outside the synced folder (off: such links are "
        "skipped and reported, so a link to /etc/passwd is never indexed). Links to folders are never followed.",
    )
    # 100,000 nested <div>s held a sync for over 5 minutes (parsing time grows with the square of the depth);
    # real pages nest a few dozen levels, old ones with unclosed <p>s a few hundred.
    max_html_depth: int = Field(
        2048, ge=16, description="HTML nested deeper than this is skipped and reported, before it is parsed."
    )
    # A 39 MB DOCX that passed the bomb checks (~190 MB of XML) took 400 s and 1.15 GB; a 300-page text-only
    # document has ~5 MB of XML.
    max_docx_xml_mb: float = Field(
        25.0, gt=0, description="A DOCX whose XML parts inflate past this many MB is skipped and reported."
    )
    load_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds one file may take to parse; a slower one is stopped and reported as failed (files are "
        "parsed in a separate process, which is killed).",
    )
    loader_memory_mb: int = Field(
        2048,
        ge=256,
        description="Memory (address space, MB) of the process that parses files; a file that "
        "needs more is reported as failed.",
    )

    # Index
    index_type: Literal["flat", "hnsw", "ivf"] = Field(
        "flat",
        description="'flat' is exact search (updated in place per sync); 'hnsw' and 'ivf' are approximate "
        "(large collections) and are rebuilt from the stored vectors by every sync that changes anything.",
    )
    hnsw_m: int = Field(32, ge=4, le=128, description="HNSW graph degree (index_type 'hnsw').")
    hnsw_ef_search: int = Field(64, ge=8, description="HNSW search breadth; higher is slower and more exact.")
    ivf_nlist: int = Field(0, ge=0, description="IVF cells; 0 picks ~4*sqrt(chunks) (index_type 'ivf').")
    ivf_nprobe: int = Field(16, ge=1, description="IVF cells visited per query.")
    keep_versions: int = Field(
        2, ge=2, description="Snapshots kept on disk: the current one and the previous."
    )

    # Search
    search_mode: Literal["hybrid", "bm25", "dense"] = Field(
        "hybrid", description="Default retriever: BM25, dense vectors, or both fused."
    )
    dense_weight: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Weight of the min-max normalised dense score in hybrid fusion (BM25 gets 1 - weight). "
        "0.2 was tuned on half of squad-es-dev and checked on the other half (docs/benchmarks.md).",
    )
    candidates: int = Field(
        50, ge=1, description="Results taken from each retriever before fusion (and before reranking)."
    )
    bm25_depth: int = Field(
        1000, ge=1, description="BM25 results read per hybrid query to score the dense candidates too."
    )
    # BM25 ORs every word of the query: a 5 MB question made SQLite score the whole index per word.
    max_query_words: int = Field(
        64, ge=1, description="Distinct words of a query that BM25 searches for; the rest are ignored."
    )
    reranker: str | None = Field(
        None, description="Cross-encoder (hub id or local directory) that reorders the fused candidates; off."
    )
    rerank_candidates: int = Field(20, ge=1, description="Fused candidates the cross-encoder rescores.")


class ModelChoice(Protocol):
    """The part of the ``models:`` settings section that retrieval reads."""

    @property
    def embedding(self) -> str: ...  # 'embedded', a hub id or a local sentence-transformers directory

    @property
    def device(self) -> str: ...  # 'auto', 'cpu', 'cuda' or 'mps'


class Host(Protocol):
    """What the retrieval package reads of the application's settings: the data directory (collections live
    under ``<data_dir>/collections``), its own section, and which embedding model runs where.
    ``chatbot.settings.Settings`` is one; a script may pass any object with these attributes."""

    @property
    def data_dir(self) -> Path: ...

    @property
    def retrieval(self) -> RetrievalSettings: ...

    @property
    def models(self) -> ModelChoice: ...
