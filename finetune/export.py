"""Export a version as a standard model directory: LoRA merged into its base, safetensors + tokenizer.

The result loads with ``AutoModelForCausalLM.from_pretrained(out_dir)`` and needs no peft. Optional extras:

- int8 dynamic quantisation for CPU inference (``torch.ao.quantization.quantize_dynamic`` on the Linear
  layers). Its packed weights do not fit safetensors, and pickle is not allowed in this project (a planted
  file must never run code on load), so the directory keeps float32 safetensors plus ``quantization.json``,
  and :func:`load_exported` quantises at load time (under a second for 135M parameters). ``export`` measures
  the int8 model's size in memory and its generation speed against float32 and reports both.
- upload to the Hugging Face Hub (needs network access and a token in the environment or HF cache).
"""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from finetune.models import load_version, quantize_int8
from finetune.registry import Version
from retrieval.files import staged_dir

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from finetune.config import Host

log = logging.getLogger(__name__)

QUANT_FILE = "quantization.json"


def export(
    settings: Host,
    version: Version | None,
    out_dir: Path,
    int8: bool = False,
    hub_repo: str | None = None,
) -> dict[str, Any]:
    """Merge ``version`` (default: current) into its base and save it to ``out_dir``; return a report."""
    model, tokenizer = load_version(settings, version)  # merged, eval mode
    model = model.to("cpu").float()
    with staged_dir(out_dir) as staging:
        model.save_pretrained(staging)  # safetensors by default
        tokenizer.save_pretrained(staging)
        report: dict[str, Any] = {
            "path": str(out_dir),
            "version": version.id if version else None,
            "float32_mib": round(_state_mib(model), 3),
        }
        if int8:
            (staging / QUANT_FILE).write_text(json.dumps({"method": "dynamic-int8", "modules": ["Linear"]}))
            report.update(int8_report(model, tokenizer))
    if hub_repo:
        report["hub_url"] = push_to_hub(out_dir, hub_repo)
    return report


def load_exported(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load an exported directory on CPU, int8-quantised when it was exported with ``int8``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    if (path / QUANT_FILE).is_file():
        model = quantize_int8(model)
    return model, AutoTokenizer.from_pretrained(path)


def _state_mib(model: torch.nn.Module) -> float:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)  # in memory only, to measure the size; never written to disk
    return buf.tell() / 2**20


def _tokens_per_second(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, new_tokens: int = 32
) -> float:
    inputs = tokenizer("The assistant answers questions about", return_tensors="pt")
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=4, do_sample=False)  # warm-up
        start = time.perf_counter()
        out = model.generate(
            **inputs,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    return (out.shape[1] - inputs["input_ids"].shape[1]) / (time.perf_counter() - start)


def int8_report(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> dict[str, float]:
    """Size and greedy generation speed (batch 1, CPU) of float32 versus int8-dynamic."""
    fp32_speed = _tokens_per_second(model, tokenizer)
    q = quantize_int8(_copy(model))
    return {
        "int8_mib": round(_state_mib(q), 3),
        "float32_tokens_per_s": round(fp32_speed, 1),
        "int8_tokens_per_s": round(_tokens_per_second(q, tokenizer), 1),
    }


def _copy(model: PreTrainedModel) -> PreTrainedModel:
    import copy

    return copy.deepcopy(model)


def push_to_hub(path: Path, repo_id: str) -> str:
    """Upload ``path`` to the Hub as a model repository (private); needs network and a token."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=True, exist_ok=True)
    info = api.upload_folder(
        folder_path=str(path), repo_id=repo_id, commit_message="Upload from chatbot export"
    )
    return str(getattr(info, "commit_url", repo_id))
