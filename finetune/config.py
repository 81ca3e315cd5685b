"""Settings of the fine-tuning package (the ``finetune:`` section of the settings file)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class FinetuneSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str = Field("lora", pattern="^(lora|full)$", description="'lora' (peft adapters) or 'full'.")
    seed: int = Field(42, description="Seed for data shuffling, splits, initialisation and dropout.")
