"""How well an embedded base model reads a passage before any training: few-shot extractive QA.

Each held-out question (the odd-numbered articles, never trained on) is put to the plain base model as text,
after two solved examples from training articles:

    Texto: <passage> / Pregunta: <question> / Respuesta: <answer>        (twice, then)
    Texto: <the question's own passage> / Pregunta: <question> / Respuesta:

and the model's greedy continuation up to the end of the line is scored by token F1 against the references
(``chatbot.evaluation.token_f1``). No retrieval, no chat template, no sources to choose from: the reading
skill alone, which the grounded-QA recipe then builds on. Spanish is squad-es; English is the project's own
encyclopedia, manual, handbook, history and science files (``data/qa/``, in English labels).

    python benchmarks/base_reading.py --squad ../shared/data/squad-es-dev.json --generator embedded \\
        --generator embedded-gemma3-270m --limit 150 --out base-reading.json

It runs on transformers in float32 on the CPU (~2.5 s a question on 2 cores) and also reports the prompt's
length in each model's tokens.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import emit, machine

ROOT = Path(__file__).resolve().parents[1]
ENGLISH = ["wiki-en", "manual-en", "org-en", "history-en", "science-en"]


def questions(language: str, squad: Path | None, limit: int) -> tuple[list[str], list[tuple[str, str, list]]]:
    """(two solved examples as text, held-out (passage, question, answers)) for ``language``."""
    if language == "es":
        if squad is None:
            raise SystemExit("--squad FILE is needed for Spanish")
        articles = json.loads(squad.read_text(encoding="utf-8"))["data"]
        labels = ("Texto", "Pregunta", "Respuesta")
    else:
        articles = []
        for name in ENGLISH:
            articles += json.loads((ROOT / "data" / "qa" / f"{name}.json").read_text(encoding="utf-8"))[
                "data"
            ]
        labels = ("Text", "Question", "Answer")
    train, held = articles[0::2], articles[1::2]
    text, ask, answer = labels
    shots = []
    for article in train[:2]:
        paragraph = article["paragraphs"][0]
        qa = paragraph["qas"][0]
        shots.append(
            f"{text}: {paragraph['context']}\n{ask}: {qa['question']}\n{answer}: {qa['answers'][0]['text']}\n\n"
        )
    items = [
        (p["context"], qa["question"], [a["text"] for a in qa["answers"]])
        for article in held
        for p in article["paragraphs"]
        for qa in p["qas"]
        if qa.get("answers")
    ]
    step = max(1, len(items) // limit)
    prompts = [f"{text}: {c}\n{ask}: {q}\n{answer}:" for c, q, _ in items[::step][:limit]]
    return ["".join(shots) + p for p in prompts], items[::step][:limit]


def run(generator: str, language: str, squad: Path | None, limit: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from chatbot.evaluation import token_f1
    from chatbot.settings import load_settings
    from finetune.models import ensure_embedded_generator

    folder = ensure_embedded_generator(load_settings(None), generator)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    prompts, items = questions(language, squad, limit)
    scores, lengths, started = [], [], time.perf_counter()
    for prompt, (_, _, answers) in zip(prompts, items, strict=True):
        ids = tok(prompt, return_tensors="pt").input_ids
        lengths.append(ids.shape[1])
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id)
        text = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).split("\n")[0].strip()
        scores.append(token_f1(text, answers))
    return {
        "generator": generator,
        "language": language,
        "questions": len(scores),
        "f1": round(sum(scores) / len(scores), 3),
        "prompt_tokens_mean": round(sum(lengths) / len(lengths), 1),
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_after": machine()["load_average"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--squad", type=Path, help="squad-es (SQuAD v1.1 format) for the Spanish questions")
    parser.add_argument("--generator", action="append", help="embedded base (repeatable; default both)")
    parser.add_argument("--language", action="append", choices=["es", "en"], help="default both")
    parser.add_argument("--limit", type=int, default=150, help="held-out questions per language")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    results = [
        run(generator, language, args.squad, args.limit)
        for language in args.language or ["es", "en"]
        for generator in args.generator or ["embedded", "embedded-gemma3-270m"]
    ]
    for r in results:
        print(json.dumps(r), flush=True)
    emit({"runs": results}, args.out)


if __name__ == "__main__":
    main()
