"""Helpers of the fine-tuning tests: a few small documents and chat examples, and settings sized so a run
of the tiny 2-layer model takes well under a second of training (block 32 tokens, batch 2)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

_SENTENCES = [
    "The library opens at nine in the morning.",
    "It closes at eight in the evening.",
    "Index a folder with chatbot index, then ask a question with chatbot ask.",
    "La biblioteca abre a las nueve de la mañana.",
    "Cierra a las ocho de la tarde.",
    "El asistente responde preguntas sobre los documentos de una organización.",
    "Sources are cited with numbers in square brackets, like [1] or [2].",
    "The assistant answers questions about the documents of one organisation.",
]
# Five documents of four paragraphs each, every one a different pair of sentences.
DOCS = {
    f"doc{d}.md": "\n\n".join(
        f"{_SENTENCES[(d + p) % 8]} {_SENTENCES[(3 * d + 2 * p + 1) % 8]}" for p in range(4)
    )
    for d in range(5)
}

CHATS = [
    [
        {"role": "user", "content": "When does the library open?"},
        {"role": "assistant", "content": "The library opens at nine in the morning."},
    ],
    [
        {"role": "system", "content": "Answer from the sources."},
        {"role": "user", "content": "How are sources cited?"},
        {"role": "assistant", "content": "With numbers in square brackets, like [1]."},
    ],
    [
        {"role": "user", "content": "¿Cuándo cierra la biblioteca?"},
        {"role": "assistant", "content": "Cierra a las ocho de la tarde."},
    ],
    [
        {"role": "user", "content": "How do I index a folder?"},
        {"role": "assistant", "content": "Index a folder with chatbot index."},
    ],
]

FINETUNE = {
    "block_size": 48,  # the tiny tokenizer makes ~14 blocks of 48 from DOCS; chat examples are < 48 tokens
    "passage_chars": 200,
    "val_fraction": 0.25,
    "batch_size": 2,
    "eval_batch_size": 4,
    "grad_accum": 2,
    "max_steps": 8,
    "save_steps": 3,
    "eval_steps": 4,
    "learning_rate": 5e-3,  # random tiny model: a large rate so 8 steps move the loss visibly
    "warmup_ratio": 0.1,
    "lora_r": 4,
    "lora_alpha": 8,
    "progress_bar": False,
    # float32 as the figures in these tests were measured (bf16 autocast, the CPU default where the CPU has
    # bf16 instructions, moves the tiny model's losses by a few per cent)
    "mixed_precision": "no",
}


def write_docs(folder: Path, docs: dict[str, str] = DOCS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in docs.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def write_chats(path: Path, chats: list = CHATS) -> Path:
    path.write_text("".join(json.dumps({"messages": m}, ensure_ascii=False) + "\n" for m in chats))
    return path


def write_config(settings, path: Path) -> Path:
    """The settings as a YAML file, for runs in a subprocess (``load_settings(path)``)."""
    data = {
        "data_dir": str(settings.data_dir),
        "models": {"generator": settings.models.generator, "device": "cpu"},
        "finetune": settings.finetune.model_dump(mode="json"),
    }
    path.write_text(yaml.safe_dump(data))
    return path


def trainset_of(settings):
    from transformers import AutoTokenizer

    from finetune.data import build_trainset, collect

    found = collect(settings.finetune, settings.data_dir)
    tokenizer = AutoTokenizer.from_pretrained(settings.models.generator)
    return build_trainset(found.items, tokenizer, settings.finetune)
