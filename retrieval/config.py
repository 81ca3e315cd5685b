"""Settings of the retrieval package (the ``retrieval:`` section of the settings file)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RetrievalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chunk_tokens: int = Field(200, ge=16, le=4096, description="Target chunk size, in embedding-model tokens.")
    chunk_overlap: int = Field(30, ge=0, description="Tokens shared by consecutive chunks of one section.")
    embed_batch_size: int = Field(32, ge=1, description="Chunks embedded per batch.")
    max_file_mb: float = Field(50.0, gt=0, description="Files larger than this are skipped and reported.")
