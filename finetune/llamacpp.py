"""llama.cpp as the inference engine: the library, its quantiser, and an :class:`Engine` that serves several
conversations at once.

The library is llama.cpp's C API from the prebuilt ``llama-cpp-py-sync`` wheel (CFFI, no compiler needed; set
``LLAMA_CPP_LIB`` to use a llama.cpp built for this very CPU instead). An :class:`Engine` holds one GGUF model
and one context with up to ``slots`` sequences, driven by one thread with continuous batching: every step decodes
the next token of each running answer and a chunk of each waiting prompt in the same ``llama_decode`` call,
so a new question starts while others are being answered. Requests beyond the free slots wait in a bounded
queue; past it, :class:`EngineBusy` is raised at once rather than making a user wait without end.

Token ids go in and come out: tokenising, the chat template, detokenising, stop strings and the choice of each
token (``Sampler``, the callers' logits processing) stay with the caller, so answers and token counts are
exactly those of the transformers path's tokenizer.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import json
import logging
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from finetune.decoding import DRAFT_TOKENS, Decoding, Draft, Sampler, TokenBytes, log_softmax

log = logging.getLogger(__name__)

# (logits of the next token, float32, a copy the sampler may change; the answer's tokens so far) -> token id
ChooseToken = Callable[[np.ndarray, list[int]], int]


class EngineUnavailable(RuntimeError):
    """llama.cpp cannot be loaded here (package missing, library or model file unreadable)."""


class EngineBusy(RuntimeError):
    """Every slot is answering and the waiting queue is full."""


_api: Any = None
_api_lock = threading.Lock()


def library() -> Any:
    """llama.cpp's C API (ctypes), loaded once, its log routed to :mod:`logging` (warnings and errors)."""
    global _api
    with _api_lock:
        if _api is None:
            try:
                from ik_llama_cpp import _ctypes_api as api
            except ImportError as exc:
                raise EngineUnavailable(
                    "the llama.cpp engine is not installed: `pip install ik-llama-cpp-python` (a prebuilt wheel)"
                ) from exc
            except OSError as exc:
                raise EngineUnavailable(f"the llama.cpp library cannot be loaded: {exc}") from exc
            lib = api._lib
            lib.llama_kv_cache_seq_rm.argtypes = [
                ctypes.c_void_p,
                ctypes.c_int32,
                ctypes.c_int32,
                ctypes.c_int32,
            ]
            lib.llama_kv_cache_seq_rm.restype = ctypes.c_bool
            # (ctx, source sequence, destination sequence, first position, end position)
            lib.llama_kv_cache_seq_cp.argtypes = [ctypes.c_void_p, *[ctypes.c_int32] * 4]
            lib.llama_kv_cache_seq_cp.restype = None
            lib.llama_n_ctx_train.argtypes = [ctypes.c_void_p]
            lib.llama_n_ctx_train.restype = ctypes.c_int32
            for name in ("llama_kv_cache_defrag", "llama_kv_cache_update"):
                getattr(lib, name).argtypes = [ctypes.c_void_p]
                getattr(lib, name).restype = None
            lib.llama_log_set.argtypes = [_LOG_CALLBACK, ctypes.c_void_p]
            lib.llama_log_set.restype = None
            lib.llama_log_set(_forward_log, None)
            api.llama_backend_init()
            _api = api
    return _api


@ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
def _forward_log(level: int, text: bytes | None, _data: Any) -> None:
    # ggml_log_level: 1 debug, 2 info, 3 warn, 4 error, 5 continuation
    if level in (3, 4) and text:
        message = text.decode("utf-8", "replace").rstrip()
        if message and not message.startswith(_NOISE):
            log.log(logging.ERROR if level == 4 else logging.WARNING, "llama.cpp: %s", message)


# warnings ik_llama.cpp prints on every load that no one can act on: on a CPU-only one it counts the CPU as a
# device with no free memory, and on the Gemma 3 base it finds a text token of Gemma's vocabulary ('</s>') that
# looks like a control token and calls that a bug in the model
_NOISE = ("Free memory 0 MiB", "load: control-looking token:")


_LOG_CALLBACK = type(_forward_log)


@dataclass(frozen=True)
class Sampling:
    """How to choose tokens, as data (what crosses to the engine's process): see :class:`finetune.decoding.Sampler`."""

    decoding: Decoding
    abstain_ids: tuple[int, ...] = ()
    seed: int | None = None
    suppress_before: int = 0  # end of sequence is never chosen before this many tokens (benchmarks)
    sources: tuple[str, ...] = ()  # the numbered sources' texts (``decoding.extractive``)
    question: str = ""  # what the drafts' support is measured against (``decoding.drafts``)
    # the abstention sentences' first two tokens (see finetune.decoding.FirstTokenBias)
    abstain_openings: tuple[tuple[int, int], ...] = ()

    def sampler(
        self, prompt: list[int], stop_ids: frozenset[int], pieces: TokenBytes | None = None
    ) -> Sampler:
        return Sampler(
            self.decoding,
            prompt,
            list(self.abstain_ids),
            self.seed,
            stop_ids,
            self.suppress_before,
            self.sources,
            pieces,
            self.question,
            self.abstain_openings,
        )


@dataclass(eq=False)
class Request:
    """One answer to generate: ``prompt`` token ids in; token ids out through :meth:`tokens`."""

    prompt: list[int]
    sampler: ChooseToken | Sampling
    max_new_tokens: int
    stop_ids: frozenset[int]
    cancelled: threading.Event = field(default_factory=threading.Event)
    out: Any = field(default_factory=queue.SimpleQueue)  # .put(token | None at the end | an exception)
    generated: list[int] = field(default_factory=list)
    seq: int = -1
    fed: int = 0  # prompt tokens already in the KV cache
    on_cancel: Callable[[], None] | None = None
    # drafting (``Decoding.drafts``): the answer is held back, drafted from each first token in turn, and the
    # best draft is sent at the end
    drafts: list[Draft] = field(default_factory=list)
    pending: list[tuple[int, float]] = field(default_factory=list)  # first tokens still to draft from
    logprobs: list[float] | None = None  # of the current draft's tokens; None when not drafting
    shared: int = 0  # prompt tokens taken from the engine's kept prompt (prompt cache)
    hesitation: float | None = None  # at the answer's first position, or its second (FirstTokenBias)

    def tokens(self, timeout: float = 600.0):
        """The answer's token ids as they are generated; raises what the engine raised for this request."""
        while True:
            item = self.out.get(timeout=timeout)
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def cancel(self) -> None:
        """Stop generating: the engine frees this request's slot at its next step."""
        if not self.cancelled.is_set():
            self.cancelled.set()
            if self.on_cancel is not None:
                self.on_cancel()


# a prompt sharing fewer tokens than this with the kept one is kept whole instead (another system prompt)
MIN_SHARED = 16


class Engine:
    """One GGUF model in llama.cpp answering up to ``slots`` requests at once, and its worker thread.

    The KV cache holds ``pool`` tokens for all requests together. A request (prompt and answer) may be as long
    as ``window`` (default: the model's trained context); it is admitted once a slot is free and the pool
    has room for its whole length, so a running answer never runs out of cache.

    With ``prompt_cache``, the beginning that consecutive prompts share (token for token: the system prompt and
    the instructions of every grounded question) is kept in a sequence of its own, and a new prompt starts
    from it instead of reading it again (see :meth:`_keep`). It gives way when a request needs its room in
    the pool."""

    def __init__(
        self,
        path: Path,
        window: int | None = None,
        pool: int = 16384,
        slots: int = 4,
        queue_limit: int = 8,
        threads: int = 0,
        batch: int = 512,
        prompt_cache: bool = True,
    ) -> None:
        api = library()
        self.api, self.path = api, Path(path)
        self.slots, self.queue_limit, self.batch = slots, queue_limit, batch
        self.prompt_cache = prompt_cache
        self._kept_seq = slots  # the sequence that keeps the last prompt's cache (prompt_cache)
        self._kept: list[int] = []  # that prompt's tokens
        self.reused = 0  # prompt tokens taken from the kept cache instead of read again
        params = api.llama_model_default_params()
        params.n_gpu_layers = 0
        self.model = api.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise EngineUnavailable(f"llama.cpp could not load {path}")
        cparams = api.llama_context_default_params()
        self.trained_context = int(api._lib.llama_n_ctx_train(self.model))
        self.window = min(window or self.trained_context, self.trained_context)
        self.pool = max(pool, self.window)
        cparams.n_ctx = self.pool
        cparams.n_batch = cparams.n_ubatch = batch
        cparams.n_seq_max = slots + 1 if prompt_cache else slots
        cparams.flash_attn = False  # faster prompts but slower decoding here, and asserts without AVX-VNNI
        cparams.n_threads = cparams.n_threads_batch = threads or (os.cpu_count() or 1)
        self.ctx = api.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            api.llama_free_model(self.model)
            raise EngineUnavailable(f"llama.cpp could not create a context for {path}")
        self.n_vocab = api.llama_vocab_n_tokens(api.llama_model_get_vocab(self.model))
        self._batch = api.llama_batch_init(batch, 0, 1)
        self._cv = threading.Condition()
        self._waiting: collections.deque[Request] = collections.deque()
        self._active: dict[int, Request] = {}
        self._closed = False
        self._pieces: TokenBytes | None = None
        self._worker = threading.Thread(target=self._run, daemon=True, name=f"llama.cpp {self.path.name}")
        self._worker.start()

    def token_bytes(self) -> TokenBytes:
        """Each token's bytes from the model's vocabulary, read once."""
        if self._pieces is None:
            buf = ctypes.create_string_buffer(256)
            table = []
            for t in range(self.n_vocab):
                # ik_llama.cpp takes the model here (mainline takes its vocabulary)
                n = self.api.llama_token_to_piece(self.model, t, buf, len(buf), 0, False)
                table.append(buf.raw[:n] if n > 0 else b"")
            self._pieces = TokenBytes(table)
        return self._pieces

    # -------------------------------------------------------------------------------------------- callers
    def submit(self, request: Request) -> Request:
        """Queue ``request``; raises :class:`EngineBusy` when ``queue_limit`` requests already wait, and
        ValueError when its prompt leaves no room for an answer in the window."""
        if len(request.prompt) + 1 > self.window:
            raise ValueError(
                f"prompt of {len(request.prompt)} tokens does not fit the model's window of {self.window}"
            )
        request.max_new_tokens = min(request.max_new_tokens, self.window - len(request.prompt))
        with self._cv:
            if self._closed:
                raise EngineUnavailable("the engine was closed")
            if len(self._waiting) >= self.queue_limit and len(self._active) >= self.slots:
                raise EngineBusy(
                    f"{len(self._active)} answers are being written and {len(self._waiting)} wait; try again shortly"
                )
            self._waiting.append(request)
            self._cv.notify()
        return request

    @property
    def busy(self) -> bool:
        """Whether an answer is being written or waits."""
        return self.load != (0, 0)

    @property
    def load(self) -> tuple[int, int]:
        """(answers being written, requests waiting)."""
        with self._cv:
            return len(self._active), len(self._waiting)

    def close(self) -> None:
        """Take no new requests; the answers already running or waiting are completed, then the model is freed
        (by the worker, so this returns at once)."""
        with self._cv:
            self._closed = True
            self._cv.notify()

    # --------------------------------------------------------------------------------------------- worker
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._closed and not self._active and not self._waiting:
                    self._cv.wait()
                self._admit()
                if self._closed and not self._active:
                    break
            self._drop_cancelled()
            if not self._active:
                continue
            try:
                self._step()
            except Exception as exc:  # a failed decode ends the requests of this step, not the engine
                log.exception("llama.cpp decode failed")
                for seq in list(self._active):
                    self._finish(seq, exc)
        self.api.llama_batch_free(self._batch)
        self.api.llama_free(self.ctx)
        self.api.llama_free_model(self.model)
        log.info("llama.cpp engine for %s closed", self.path.name)

    def _admit(self) -> None:
        free = [s for s in range(self.slots) if s not in self._active]
        reserved = sum(len(r.prompt) + r.max_new_tokens for r in self._active.values())
        while free and self._waiting:
            request = self._waiting[0]
            if request.cancelled.is_set():
                self._waiting.popleft().out.put(None)
                continue
            need = len(request.prompt) + request.max_new_tokens
            if reserved + len(self._kept) + need > self.pool:
                if self._kept:  # the kept prompt gives way
                    self._drop_kept()
                    continue
                break  # waits for running answers to end (first come, first served)
            self._waiting.popleft()
            reserved += need
            request.seq = free.pop(0)
            shared = self._shared(request.prompt)
            if shared:
                self.api._lib.llama_kv_cache_seq_cp(self.ctx, self._kept_seq, request.seq, 0, shared)
                request.fed = request.shared = shared
                self.reused += shared
            if isinstance(request.sampler, Sampling):
                pieces = self.token_bytes() if request.sampler.sources else None
                request.sampler = request.sampler.sampler(request.prompt, request.stop_ids, pieces)
            self._active[request.seq] = request

    def _shared(self, prompt: list[int]) -> int:
        """Tokens at the start of ``prompt`` whose cache the kept prompt holds (all but the prompt's last
        token at most: it is read again for its logits)."""
        n, kept = 0, self._kept
        limit = min(len(kept), len(prompt) - 1)
        while n < limit and kept[n] == prompt[n]:
            n += 1
        return n

    def _keep(self, request: Request) -> None:
        """After ``request``'s prompt was read: keep the beginning it shared with the kept prompt, or, when it
        shared little, its whole prompt (the next may share more).

        Only the shared beginning is kept for long: llama.cpp attends over every cell up to the highest one in
        use, so a whole prompt kept beside the next one would make that one's every step slower."""
        if request.shared >= MIN_SHARED:
            if request.shared < len(self._kept):
                self.api._lib.llama_kv_cache_seq_rm(self.ctx, self._kept_seq, request.shared, -1)
                self._kept = self._kept[: request.shared]
        elif self.prompt_cache and request.prompt != self._kept:
            self._drop_kept()
            self.api._lib.llama_kv_cache_seq_cp(self.ctx, request.seq, self._kept_seq, 0, len(request.prompt))
            self._kept = list(request.prompt)

    def _drop_kept(self) -> None:
        self.api._lib.llama_kv_cache_seq_rm(self.ctx, self._kept_seq, -1, -1)
        self._kept = []

    def _drop_cancelled(self) -> None:
        for seq, request in list(self._active.items()):
            if request.cancelled.is_set():
                self._finish(seq, None)

    def _finish(self, seq: int, error: BaseException | None) -> None:
        request = self._active.pop(seq)
        self.api._lib.llama_kv_cache_seq_rm(self.ctx, seq, -1, -1)
        request.out.put(error)

    def _step(self) -> None:
        batch, n, wants = self._batch, 0, []
        decoding = [r for r in self._active.values() if r.fed == len(r.prompt)]
        prefilling = [r for r in self._active.values() if r.fed < len(r.prompt)]
        for request in decoding:  # every running answer advances by one token per step
            self._put(
                batch,
                n,
                request.generated[-1],
                len(request.prompt) + len(request.generated) - 1,
                request.seq,
                True,
            )
            wants.append((n, request))
            n += 1
        for request in prefilling:  # then prompts, in chunks that fill the rest of the batch
            take = min(len(request.prompt) - request.fed, self.batch - n)
            if take <= 0:
                break
            for i in range(take):
                last = request.fed + i == len(request.prompt) - 1
                self._put(batch, n, request.prompt[request.fed + i], request.fed + i, request.seq, last)
                if last:
                    wants.append((n, request))
                n += 1
            request.fed += take
        batch.n_tokens = n
        status = self.api.llama_decode(self.ctx, batch)
        if status == 1:  # no contiguous room in the cache although admission reserved enough: compact, retry
            self.api._lib.llama_kv_cache_defrag(self.ctx)
            self.api._lib.llama_kv_cache_update(self.ctx)
            status = self.api.llama_decode(self.ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")
        for index, request in wants:
            if request.cancelled.is_set():
                self._finish(request.seq, None)
                continue
            pointer = self.api.llama_get_logits_ith(self.ctx, index)
            logits = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy()
            may_draft = isinstance(request.sampler, Sampler) and request.sampler.quote is not None
            first = not request.generated and request.logprobs is None
            if first:
                self._keep(request)
            raw = log_softmax(logits) if request.logprobs is not None or (first and may_draft) else None
            token = int(request.sampler(logits, request.generated))
            if len(request.generated) < 2 and isinstance(request.sampler, Sampler):
                # (taken again at the second position after a first token the abstention shares with answers)
                request.hesitation = request.sampler.hesitation
            if first and may_draft and raw is not None:
                others = request.sampler.alternatives(token)  # type: ignore[union-attr]
                if others:
                    request.pending = [(t, float(raw[t])) for t in others]
                    request.logprobs = []
            if request.logprobs is not None and raw is not None:
                self._draft(request, token, float(raw[token]))
                continue
            if token in request.stop_ids:
                self._finish(request.seq, None)
                continue
            request.generated.append(token)
            request.out.put(token)
            if len(request.generated) >= request.max_new_tokens:
                self._finish(request.seq, None)

    def _draft(self, request: Request, token: int, logprob: float) -> None:
        """One token of a draft; at a draft's end, the next draft starts from the prompt (its cache kept), or
        the best draft is sent and the request ends."""
        assert request.logprobs is not None
        ended = token in request.stop_ids
        if not ended:
            request.generated.append(token)
            request.logprobs.append(logprob)
        if not ended and len(request.generated) < min(request.max_new_tokens, DRAFT_TOKENS):
            return
        if ended or len(request.generated) >= request.max_new_tokens:
            request.drafts.append(Draft(list(request.generated), list(request.logprobs)))
        elif not request.drafts:  # a long answer: no drafts; what is written so far is sent, the rest streams
            request.logprobs, request.pending = None, []
            for sent in request.generated:
                request.out.put(sent)
            return
        # (another draft that grows this long is dropped)
        while request.pending:
            first, first_logprob = request.pending.pop(0)
            if request.max_new_tokens <= 1:
                request.drafts.append(Draft([first], [first_logprob]))
                continue
            self.api._lib.llama_kv_cache_seq_rm(self.ctx, request.seq, len(request.prompt), -1)
            request.generated, request.logprobs = [first], [first_logprob]
            request.sampler.reset()  # type: ignore[union-attr]
            return
        best = request.sampler.best(request.drafts)  # type: ignore[union-attr]
        request.generated = list(best.tokens)
        for kept in best.tokens:
            request.out.put(kept)
        self._finish(request.seq, None)

    @staticmethod
    def _put(batch: Any, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = 1 if logits else 0


# ----------------------------------------------------------------------------------- the engine's own process
class EngineProcess:
    """An :class:`Engine` in a process of its own, driven over a pipe of JSON lines (no pickles).

    llama.cpp decodes at half speed in a process whose PyTorch has run its OpenMP thread pool (the embedding
    model does, for every question): two OpenMP runtimes fight over the cores (docs/benchmarks.md). In its own
    process it runs at full speed, holds no GIL the app needs, and a crash in native code cannot take the app
    down: the process is started again at the next request. Same interface as :class:`Engine`; requests carry
    a :class:`Sampling`, never a function."""

    def __init__(self, path: Path, start_timeout: float = 300.0, **config: Any) -> None:
        self.path = Path(path)
        self.config = {"path": str(path), **config}
        self.start_timeout = start_timeout
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._requests: dict[int, Request] = {}
        self._ids = 0
        self._closed = False
        self._start()

    def _start(self) -> None:
        root = str(Path(__file__).resolve().parents[1])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "finetune.llamacpp", json.dumps(self.config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
            bufsize=1,
        )
        ready: queue.SimpleQueue = queue.SimpleQueue()
        self._reader = threading.Thread(
            target=self._read, args=(self.proc, ready), daemon=True, name=f"llama.cpp {self.path.name} reader"
        )
        self._reader.start()
        try:
            info = ready.get(timeout=self.start_timeout)
        except queue.Empty:
            self.proc.kill()
            raise EngineUnavailable(
                f"the llama.cpp process did not start within {self.start_timeout:g} s"
            ) from None
        if info is None:
            raise EngineUnavailable(
                f"the llama.cpp process for {self.path.name} ended at start (exit code {self.proc.wait()}); "
                "its error is in the log above"
            )
        self.n_vocab, self.trained_context = info["n_vocab"], info["trained_context"]
        self.window, self.pool = info["window"], info["pool"]

    def _read(self, proc: subprocess.Popen, ready: queue.SimpleQueue) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            message = json.loads(line)
            if "ready" in message:
                ready.put(message["ready"])
                continue
            with self._lock:
                request = self._requests.get(message["id"])
                if request is not None and "t" not in message:
                    del self._requests[message["id"]]
            if request is None:
                continue
            if "t" in message:
                request.generated.append(message["t"])
                request.out.put(message["t"])
            elif "error" in message:
                kind = {"busy": EngineBusy, "value": ValueError}.get(message.get("kind"), RuntimeError)
                request.out.put(kind(message["error"]))
            else:
                request.hesitation = message.get("hesitation")
                request.out.put(None)
        ready.put(None)
        code = proc.wait()
        with self._lock:
            if self.proc is not proc:
                return  # already started again; submit() failed this process's requests
            orphans, self._requests = list(self._requests.values()), {}
        if orphans or not self._closed:
            log.warning("the llama.cpp process for %s ended (exit code %s)", self.path.name, code)
        for request in orphans:
            request.out.put(EngineUnavailable(f"the llama.cpp process ended (exit code {code})"))

    def _send(self, message: dict[str, Any]) -> None:
        """One line to the process. Its own lock, never held with ``_lock``: the reader thread, which takes
        ``_lock``, must never wait on a write the process is too busy writing to read."""
        assert self.proc.stdin is not None
        with self._send_lock:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()

    def submit(self, request: Request) -> Request:
        if not isinstance(request.sampler, Sampling):
            raise TypeError("a request to the engine's process chooses its tokens by a Sampling")
        with self._lock:
            if self._closed:
                raise EngineUnavailable("the engine was closed")
            if self.proc.poll() is not None:
                log.warning("starting the llama.cpp process for %s again", self.path.name)
                for orphan in self._requests.values():
                    orphan.out.put(EngineUnavailable("the llama.cpp process ended"))
                self._requests = {}
                self._start()
            self._ids += 1
            rid = self._ids
            self._requests[rid] = request
        sampling = request.sampler
        request.on_cancel = lambda: self._cancel(rid)
        try:
            self._send(
                {
                    "op": "generate",
                    "id": rid,
                    "prompt": request.prompt,
                    "max_new_tokens": request.max_new_tokens,
                    "stop_ids": sorted(request.stop_ids),
                    "decoding": vars(sampling.decoding),
                    "abstain_ids": list(sampling.abstain_ids),
                    "seed": sampling.seed,
                    "suppress_before": sampling.suppress_before,
                    "sources": list(sampling.sources),
                    "question": sampling.question,
                    "abstain_openings": [list(pair) for pair in sampling.abstain_openings],
                }
            )
        except OSError as exc:
            with self._lock:
                self._requests.pop(rid, None)
            raise EngineUnavailable(f"the llama.cpp process is gone: {exc}") from exc
        return request

    def _cancel(self, rid: int) -> None:
        with self._lock:
            running = rid in self._requests
        if running:
            with contextlib.suppress(OSError):
                self._send({"op": "cancel", "id": rid})

    @property
    def busy(self) -> bool:
        with self._lock:
            return bool(self._requests)

    def close(self) -> None:
        """No new requests; the process ends once the answers it is writing are done."""
        with self._lock:
            self._closed = True
        with contextlib.suppress(OSError, ValueError):
            self._send({"op": "close"})
            assert self.proc.stdin is not None
            self.proc.stdin.close()


def _serve(config: dict[str, Any]) -> None:
    """The engine's process: requests from stdin, tokens to stdout, one JSON object a line."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever else writes to stdout (llama.cpp's own prints) goes to stderr
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.WARNING, format="llama.cpp engine: %(levelname)s %(message)s")
    write_lock = threading.Lock()

    def write(message: dict[str, Any]) -> None:
        with write_lock:
            try:
                protocol.write(json.dumps(message) + "\n")
            except BrokenPipeError:  # the chat's process is gone (killed, interrupted): nobody to answer
                os._exit(0)

    engine = Engine(**{**config, "path": Path(config["path"])})
    write(
        {
            "ready": {
                "n_vocab": engine.n_vocab,
                "trained_context": engine.trained_context,
                "window": engine.window,
                "pool": engine.pool,
            }
        }
    )
    requests: dict[int, Request] = {}
    for line in sys.stdin:
        message = json.loads(line)
        if message["op"] == "close":
            break
        if message["op"] == "cancel":
            if (request := requests.get(message["id"])) is not None:
                request.cancel()
            continue
        rid = message["id"]
        request = Request(
            message["prompt"],
            Sampling(
                Decoding(**message["decoding"]),
                tuple(message["abstain_ids"]),
                message["seed"],
                message["suppress_before"],
                tuple(message.get("sources", ())),
                message.get("question", ""),
                tuple((int(a), int(b)) for a, b in message.get("abstain_openings", ())),
            ),
            message["max_new_tokens"],
            frozenset(message["stop_ids"]),
            out=_Forward(rid, write, requests),
        )
        requests[rid] = request
        try:
            engine.submit(request)
        except EngineBusy as exc:
            request.out.put(exc)
        except ValueError as exc:
            request.out.put(exc)
    engine.close()
    engine._worker.join()


@dataclass
class _Forward:
    """A request's output in the engine's process: each token, the end or the error, as a JSON line."""

    rid: int
    write: Callable[[dict[str, Any]], None]
    requests: dict[int, Request]

    def put(self, item: Any) -> None:
        if isinstance(item, int):
            self.write({"id": self.rid, "t": item})
            return
        request = self.requests.pop(self.rid, None)
        if item is None:
            self.write({"id": self.rid, "end": True, "hesitation": getattr(request, "hesitation", None)})
        else:
            kind = (
                "busy"
                if isinstance(item, EngineBusy)
                else "value"
                if isinstance(item, ValueError)
                else "error"
            )
            self.write({"id": self.rid, "error": str(item), "kind": kind})


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]))
