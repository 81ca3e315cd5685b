"""Validation loss and perplexity of a model on tokenised examples (token-weighted, on the model's device)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from finetune.device import model_device, to_device

if TYPE_CHECKING:
    from transformers import PreTrainedModel

IGNORE = -100


def collate(features: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: pad id in inputs, IGNORE in labels, 0 in the attention mask.

    Packed text blocks all have the same length and need no padding; chat examples vary.
    """
    width = max(len(f["input_ids"]) for f in features)
    ids, labels, mask = [], [], []
    for f in features:
        n = len(f["input_ids"])
        ids.append(f["input_ids"] + [pad_id] * (width - n))
        labels.append(f["labels"] + [IGNORE] * (width - n))
        mask.append([1] * n + [0] * (width - n))
    return {
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels),
        "attention_mask": torch.tensor(mask),
    }


class Collator:
    """A picklable collate function (dataloader workers and Trainer need one)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return collate(features, self.pad_id)


def learned_loss(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """The cross-entropy summed over a batch's learned tokens (labels not IGNORE), their count, and the model's
    output. Token t predicts t+1, as the model's own loss does; logits are computed only at the positions that
    predict a learned token (``logits_to_keep``), which for a chat example is a few of its ~800."""
    targets = batch["labels"][:, 1:]
    keep = (targets != IGNORE).any(dim=0).nonzero().squeeze(-1)
    outputs = model(**{k: v for k, v in batch.items() if k != "labels"}, logits_to_keep=keep)
    chosen = targets[:, keep]
    loss = torch.nn.functional.cross_entropy(
        outputs.logits.float().reshape(-1, outputs.logits.size(-1)),
        chosen.reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )
    return loss, (chosen != IGNORE).sum(), outputs


@torch.no_grad()
def evaluate(
    model: PreTrainedModel, examples: Sequence[dict[str, list[int]]], pad_id: int, batch_size: int = 4
) -> dict[str, float]:
    """Mean loss per predicted token and its perplexity; ``{"tokens": 0}`` (loss NaN) on no examples.

    Logits are computed only at the positions that predict a learned token, as in training: a chat example's
    prompt is most of its length, and Gemma 3's 262k-token head over every position of a batch of 4 took ~6 GB
    in float32 (enough, after a CPU training run, to have the process killed for memory)."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    total, tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = to_device(collate(examples[start : start + batch_size], pad_id), device)
        loss, count, _ = learned_loss(model, batch)
        total += loss.item()
        tokens += int(count)
    model.train(was_training)
    if not tokens:
        return {"loss": float("nan"), "perplexity": float("nan"), "tokens": 0}
    mean = total / tokens
    return {"loss": mean, "perplexity": math.exp(mean) if mean < 700 else float("inf"), "tokens": tokens}
