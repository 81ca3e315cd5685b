"""Validation loss computed at the learned positions only equals the model's own loss over every position."""

from __future__ import annotations

import math

import torch
from transformers import AutoModelForCausalLM

from finetune.perplexity import IGNORE, collate, evaluate


def test_validation_loss_equals_the_model_s_own_loss_over_all_positions(tiny_llm_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llm_dir, dtype=torch.float32)
    torch.manual_seed(0)
    examples = []
    for prompt, answer in ((30, 4), (45, 7), (12, 3)):  # chat examples: the prompt is not learned
        ids = torch.randint(5, model.config.vocab_size, (prompt + answer,)).tolist()
        examples.append({"input_ids": ids, "labels": [IGNORE] * prompt + ids[prompt:]})
    block = torch.randint(5, model.config.vocab_size, (40,)).tolist()  # a packed text block: all learned
    examples.append({"input_ids": block, "labels": list(block)})

    got = evaluate(model, examples, pad_id=0, batch_size=3)

    batch = collate(examples, pad_id=0)  # one batch, full logits: the model's own (mean) loss
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    expected = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE
    ).item()
    assert got["tokens"] == 4 + 7 + 3 + 39  # each answer token, and every token of the block but its first
    assert math.isclose(got["loss"], expected, rel_tol=1e-5)
    assert math.isclose(got["perplexity"], math.exp(expected), rel_tol=1e-5)
