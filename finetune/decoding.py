"""How an answer's tokens are chosen, shared by both engines: the answer-only logits processors (run by
``model.generate`` on torch tensors in the transformers path) and :func:`sampler`, which runs the same
processors on numpy arrays for the llama.cpp engine, in its own process (``finetune.llamacpp``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Decoding:
    """The generation settings that choose tokens (``chatbot.settings.GenerationSettings`` has the same names)."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 50
    repetition_penalty: float = 1.0
    abstain_bias: float = 0.0
    no_repeat_ngram_size: int = 0


class AnswerNoRepeatNGram:
    """A logits processor that bans any token completing an n-gram the answer already contains.

    transformers' own ``no_repeat_ngram_size`` counts the prompt too, which would forbid quoting three words of
    a source; this one looks at the generated tokens only (from ``prompt_length`` on)."""

    def __init__(self, n: int, prompt_length: int) -> None:
        self.n, self.start = n, prompt_length

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        n = self.n
        for row in range(input_ids.shape[0]):
            answer = input_ids[row, self.start :].tolist()
            if len(answer) < n:
                continue
            prefix = tuple(answer[len(answer) - n + 1 :])
            banned = {
                answer[i + n - 1]
                for i in range(len(answer) - n + 1)
                if tuple(answer[i : i + n - 1]) == prefix
            }
            if banned:
                scores[row, list(banned)] = float("-inf")
        return scores


class FirstTokenBias:
    """A logits processor adding ``bias`` to ``token_ids`` at the answer's first position only: there the
    model chooses between answering and the abstention sentence, whose first tokens are these."""

    def __init__(self, token_ids: list[int], bias: float, prompt_length: int) -> None:
        self.ids, self.bias, self.start = sorted(set(token_ids)), bias, prompt_length

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if input_ids.shape[1] == self.start:
            scores[:, self.ids] += self.bias
        return scores


def answer_processor_list(decoding: Decoding, prompt_length: int, abstain_ids: list[int] | None) -> list[Any]:
    """The answer-only processors ``decoding`` asks for (``abstain_ids``: the abstention sentences' first
    tokens, for ``abstain_bias``); they take torch tensors or numpy arrays alike."""
    processors: list[Any] = []
    if decoding.abstain_bias and abstain_ids:
        processors.append(FirstTokenBias(abstain_ids, decoding.abstain_bias, prompt_length))
    if decoding.no_repeat_ngram_size > 0:
        processors.append(AnswerNoRepeatNGram(decoding.no_repeat_ngram_size, prompt_length))
    return processors


def sampler(
    decoding: Decoding,
    prompt: list[int],
    abstain_ids: list[int],
    seed: int | None = None,
    suppress: frozenset[int] = frozenset(),
    suppress_before: int = 0,
) -> Callable[[np.ndarray, list[int]], int]:
    """``(logits, answer so far) -> next token``, as ``model.generate`` chooses with the same settings:
    transformers' repetition penalty (over prompt and answer), :func:`answer_processor_list`, then greedy, or
    temperature, top-k and top-p sampling, in that order. ``suppress``: tokens never chosen for the answer's
    first ``suppress_before`` tokens (end of sequence, for benchmarks that decode a fixed length)."""
    processors = answer_processor_list(decoding, len(prompt), abstain_ids)
    seen = set(prompt)
    rng = np.random.default_rng(seed)
    banned = list(suppress)

    def sample(logits: np.ndarray, answer: list[int]) -> int:
        if banned and len(answer) < suppress_before:
            logits[banned] = -np.inf
        scores = logits[None, :]
        if decoding.repetition_penalty != 1.0:
            if answer:
                seen.add(answer[-1])
            ids = np.fromiter(seen, dtype=np.int64)
            picked = scores[0, ids]
            penalty = decoding.repetition_penalty
            scores[0, ids] = np.where(picked < 0, picked * penalty, picked / penalty)
        if processors:
            so_far = np.asarray([prompt + answer], dtype=np.int64)
            for processor in processors:
                scores = processor(so_far, scores)
        row = scores[0]
        if decoding.temperature <= 0:
            return int(np.argmax(row))
        row = row / decoding.temperature
        if 0 < decoding.top_k < row.size:
            kth = np.partition(row, -decoding.top_k)[-decoding.top_k]
            row = np.where(row < kth, -np.inf, row)
        probs = np.exp(row - row.max())
        probs /= probs.sum()
        if decoding.top_p < 1.0:
            order = np.argsort(-probs, kind="stable")
            before = np.cumsum(probs[order]) - probs[order]
            probs[order[before >= decoding.top_p]] = 0.0  # keeps the smallest set that reaches top_p
            probs /= probs.sum()
        return int(rng.choice(probs.size, p=probs))

    return sample
