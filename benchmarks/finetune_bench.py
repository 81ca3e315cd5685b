"""Fine-tuning benchmarks on the embedded SmolLM2-135M, CPU. Each prints one JSON line; results in
docs/benchmarks.md.

    python benchmarks/finetune_bench.py throughput --method lora   # training tokens/s and peak memory
    python benchmarks/finetune_bench.py throughput --method full
    python benchmarks/finetune_bench.py perplexity                 # sample data: before vs after training
    python benchmarks/finetune_bench.py retrain --new-docs 10      # time of a retrain with 10 new documents
    python benchmarks/finetune_bench.py export                     # merge + int8: size and generation speed

Run each in its own process: peak memory is the process's maximum resident set (ru_maxrss). The data dir
defaults to var/bench-finetune (the embedded model is converted there once, ~20 s, not timed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import time
from pathlib import Path

from chatbot.settings import Settings, load_settings
from finetune.data import build_trainset, collect
from finetune.export import export
from finetune.models import load_tokenizer, load_version
from finetune.perplexity import evaluate
from finetune.registry import Registry
from finetune.retrain import retrain
from finetune.train import train

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
SQUAD = Path("/work/shared/data/squad-es-dev.json")


def _settings(data_dir: Path, docs: list[Path], **finetune) -> Settings:
    base = {
        "docs_dirs": [str(d) for d in docs],
        "use_feedback": False,
        "progress_bar": False,
        "block_size": 256,
        "batch_size": 4,
        "grad_accum": 1,
        "save_steps": 10**6,
        "eval_steps": 10**6,
    }
    return load_settings(data_dir=data_dir, models={"device": "cpu"}, finetune={**base, **finetune})


def _peak_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def throughput(data_dir: Path, method: str, steps: int) -> dict:
    """Tokens/s of optimizer steps at seq 256 x batch 4 (1,024 tokens per step), no eval, no checkpoints."""
    lr = 2e-4 if method == "lora" else 2e-5
    settings = _settings(
        data_dir, [SAMPLE], method=method, max_steps=steps, learning_rate=lr, val_fraction=0.0
    )
    found = collect(settings.finetune, settings.data_dir, retrieval=settings.retrieval)
    trainset = build_trainset(found.items, load_tokenizer(settings), settings.finetune)
    rss_before = _peak_mib()
    run = train(settings, trainset, register=False)
    return {
        "bench": "throughput",
        "method": method,
        "steps": steps,
        "seq": 256,
        "batch": 4,
        "tokens_per_s": run.metrics["tokens_per_second"],
        "seconds": run.metrics["seconds_this_session"],
        "peak_rss_mib": _peak_mib(),
        "rss_before_training_mib": rss_before,
    }


def perplexity(data_dir: Path, epochs: float) -> dict:
    """Validation perplexity of held-out sample passages, base model vs LoRA trained on the rest."""
    settings = _settings(
        data_dir, [SAMPLE], val_fraction=0.25, epochs=epochs, learning_rate=3e-4, lora_r=16, lora_alpha=32
    )
    tokenizer = load_tokenizer(settings)
    found = collect(settings.finetune, settings.data_dir, retrieval=settings.retrieval)
    trainset = build_trainset(found.items, tokenizer, settings.finetune)
    base, tok = load_version(settings, None)
    before = evaluate(base, trainset.val, tok.pad_token_id)
    del base
    start = time.perf_counter()
    run = train(settings, trainset)
    seconds = time.perf_counter() - start
    after_model, tok = load_version(settings, run.version)
    after = evaluate(after_model, trainset.val, tok.pad_token_id)
    return {
        "bench": "perplexity",
        "train_sequences": len(trainset.train),
        "val_sequences": len(trainset.val),
        "val_tokens": before["tokens"],
        "epochs": epochs,
        "steps": run.metrics["steps"],
        "train_seconds": round(seconds, 1),
        "before": round(before["perplexity"], 2),
        "after": round(after["perplexity"], 2),
    }


def retrain_time(data_dir: Path, new_docs: int) -> dict:
    """A current version trained on the sample docs, then `retrain` after ``new_docs`` documents arrive."""
    incoming = data_dir / "incoming"
    shutil.rmtree(incoming, ignore_errors=True)
    incoming.mkdir(parents=True)
    settings = _settings(data_dir, [SAMPLE, incoming], max_steps=2, epochs=1.0)
    items = collect(settings.finetune, data_dir, retrieval=settings.retrieval).items
    first = train(settings, build_trainset(items, load_tokenizer(settings), settings.finetune))
    Registry(settings).promote(first.version.id)
    # New documents: paragraphs of Spanish Wikipedia articles (SQuAD-es), ~700 characters each.
    articles = json.loads(SQUAD.read_text())["data"]
    for i in range(new_docs):
        (incoming / f"new-{i}.txt").write_text(articles[i]["paragraphs"][0]["context"], encoding="utf-8")
    settings = _settings(data_dir, [SAMPLE, incoming], epochs=1.0, max_steps=-1)
    start = time.perf_counter()
    report = retrain(settings)
    seconds = time.perf_counter() - start
    return {
        "bench": "retrain",
        "new_docs": new_docs,
        "new_items": report.new_items,
        "replayed_items": report.replayed_items,
        "status": report.status,
        "seconds": round(seconds, 1),
        "scores": report.scores,
    }


def export_int8(data_dir: Path) -> dict:
    """Merge a 1-step LoRA version and export it with int8: sizes and greedy generation speed, CPU."""
    settings = _settings(data_dir, [SAMPLE], max_steps=1, val_fraction=0.0)
    found = collect(settings.finetune, settings.data_dir, retrieval=settings.retrieval)
    run = train(settings, build_trainset(found.items, load_tokenizer(settings), settings.finetune))
    start = time.perf_counter()
    report = export(settings, run.version, data_dir / "export", int8=True)
    return {"bench": "export", **report, "seconds_with_measurements": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bench", choices=["throughput", "perplexity", "retrain", "export"])
    parser.add_argument("--method", choices=["lora", "full"], default="lora")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--new-docs", type=int, default=10)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "var" / "bench-finetune")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    data_dir = args.data_dir  # one dir, so the embedded model is converted once; runs start clean
    shutil.rmtree(data_dir / "models" / "runs", ignore_errors=True)
    shutil.rmtree(data_dir / "models" / "registry", ignore_errors=True)
    if args.bench == "throughput":
        result = throughput(data_dir, args.method, args.steps)
    elif args.bench == "perplexity":
        result = perplexity(data_dir, args.epochs)
    elif args.bench == "retrain":
        result = retrain_time(data_dir, args.new_docs)
    else:
        result = export_int8(data_dir)
    result["load_average_1min"] = round(os.getloadavg()[0], 2)  # the 2 cores are shared; > 2 means contention
    print(json.dumps(result))


if __name__ == "__main__":
    main()
