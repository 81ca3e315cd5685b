"""Choosing the torch device and dtype (CUDA, then Apple MPS, then CPU, unless settings say otherwise), and
moving batches to it. Used by model loading, training and the local chat backend."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def select_device(preference: str = "auto") -> torch.device:
    """Return the device for ``preference`` ('auto', 'cpu', 'cuda', 'mps'); error if it is not available."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "setting models.device = 'cuda' but no CUDA device is available; use 'auto' or 'cpu'"
        )
    if preference == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(
            "setting models.device = 'mps' but Apple MPS is not available; use 'auto' or 'cpu'"
        )
    return torch.device(preference)


def select_dtype(preference: str, device: torch.device) -> torch.dtype:
    """float32 on CPU/MPS; bfloat16 on CUDA that supports it (else float16), unless set explicitly."""
    if preference != "auto":
        return getattr(torch, preference)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's parameters (the first one; models here are never split across devices)."""
    return next(model.parameters()).device


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Move every tensor of a tokenizer output or batch to ``device``; other values pass through."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
