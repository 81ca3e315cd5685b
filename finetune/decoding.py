"""How an answer's tokens are chosen, shared by both engines: the answer-only logits processors (run by
``model.generate`` on torch tensors in the transformers path) and :class:`Sampler`, which runs the same
processors on numpy arrays for the llama.cpp engine, in its own process (``finetune.llamacpp``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrieval.words import POLARITY_WORDS, content_words, stem, word_coverage, yes_no_question


@dataclass(frozen=True)
class Decoding:
    """The generation settings that choose tokens (``chatbot.settings.GenerationSettings`` has the same names)."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 50
    repetition_penalty: float = 1.0
    abstain_bias: float = 0.0
    no_repeat_ngram_size: int = 0
    extractive: bool = False
    drafts: int = 1
    support_weight: float = 0.0

    @property
    def drafting(self) -> bool:
        """Whether an answer may be drafted several times: ``drafts`` > 1 with greedy decoding (under the quoting
        rule, which gives the other first tokens)."""
        return self.drafts > 1 and self.temperature <= 0


class AnswerNoRepeatNGram:
    """A logits processor that bans any token completing an n-gram the answer already contains.

    transformers' own ``no_repeat_ngram_size`` counts the prompt too, which would forbid quoting three words of
    a source; this one looks at the generated tokens only (from ``prompt_length`` on)."""

    def __init__(self, n: int, prompt_length: int) -> None:
        self.n, self.start = n, prompt_length

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        n, scores = self.n, _copy(scores)
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
    model chooses between answering and the abstention sentence, whose first tokens are these.

    It also records the model's :attr:`hesitation` there, before the bias: the best abstention token's logit
    minus the best other token's. The model declines when ``hesitation + bias`` > 0; an answer written with a
    hesitation close to that (the chat's ``chat.unsure_hesitation``) is one the model nearly declined.

    ``openings`` are the abstention sentences' first two tokens. A first token can start an answer as well as
    the sentence: Spanish "No" is "No encuentro la respuesta…" and also the answer "No [1]." to a yes/no
    question. When the answer starts with such a token, the hesitation is taken again at the second position,
    from both: the sentence's probability (its first token's, times its second's after it) against the best
    other start's, or the first token's where an answer goes on from it (:func:`second_hesitation`)."""

    def __init__(
        self,
        token_ids: list[int],
        bias: float,
        prompt_length: int,
        openings: Sequence[tuple[int, int]] = (),
    ) -> None:
        self.ids, self.bias, self.start = sorted(set(token_ids)), bias, prompt_length
        self.openings = _openings(openings)
        self.hesitation: float | None = None
        self._first: np.ndarray | None = None  # the log-probabilities at the first position

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        length = input_ids.shape[1]
        if length == self.start:
            self.hesitation = hesitation(scores[0], self.ids)
            if self.openings:
                self._first = log_softmax(_numpy(scores[0]))
            if self.bias:
                scores = _copy(scores)
                scores[:, self.ids] += self.bias
        elif length == self.start + 1 and self._first is not None:
            first = int(input_ids[0, self.start])
            if first in self.openings:
                self.hesitation = second_hesitation(
                    self._first, first, log_softmax(_numpy(scores[0])), self.openings[first], self.ids
                )
            self._first = None
        return scores


def second_hesitation(
    first: np.ndarray, token: int, second: np.ndarray, seconds: Sequence[int], abstain_ids: Sequence[int]
) -> float:
    """The hesitation once the answer began with ``token``, an abstention sentence's first token that can also
    start an answer (``first``, ``second``: log-probabilities at the two positions; ``seconds``: the tokens
    that go on with the sentence): the log-probability of the sentence, or of another one's first token,
    minus the best of every other first token's and of ``token`` followed by anything but the sentence."""
    declining = float(first[token] + np.logaddexp.reduce(second[list(seconds)]))
    answering = float(first[token] + np.log1p(-min(float(np.exp(declining - first[token])), 1 - 1e-12)))
    others = first.copy()
    others[list(abstain_ids)] = -np.inf
    other_sentences = [float(first[a]) for a in abstain_ids if a != token]
    return max(declining, *other_sentences) - max(float(others.max()), answering)


def _openings(openings: Sequence[tuple[int, int]]) -> dict[int, list[int]]:
    """first token -> the tokens that go on with an abstention sentence after it."""
    found: dict[int, list[int]] = {}
    for first, second in openings:
        found.setdefault(int(first), []).append(int(second))
    return found


def _numpy(row: Any) -> np.ndarray:
    return np.asarray(row.float().cpu() if hasattr(row, "cpu") else row, dtype=np.float64)


def hesitation(logits: Any, abstain_ids: Sequence[int]) -> float:
    """The best of ``abstain_ids``' logits minus the best other token's, in one row of logits."""
    row = _numpy(logits)
    others = row.copy()
    others[list(abstain_ids)] = -np.inf
    return float(row[list(abstain_ids)].max() - others.max())


def first_hesitation(processors: Sequence[Any]) -> float | None:
    """The hesitation the :class:`FirstTokenBias` among ``processors`` recorded, if any."""
    return next((p.hesitation for p in processors if isinstance(p, FirstTokenBias)), None)


def _copy(scores: Any) -> Any:
    """A copy to change: transformers keeps the tensor it hands to processors as the step's raw logits."""
    return scores.clone() if hasattr(scores, "clone") else scores.copy()


def _flat(text: str) -> str:
    return " ".join(text.lower().split())


class QuoteSources:
    """A logits processor that keeps the answer a verbatim quote of one of the numbered sources, and its
    citation on a source that holds the quote (``Los Denver Broncos [2].``).

    A small model asked to answer from sources writes, now and then, a phrase that no source contains: a
    misspelt copy, or pieces of a list shuffled and repeated. At each step this allows the best-scoring token
    that keeps the answer a substring of a source (case and spacing ignored) or, once the answer has a word,
    that opens the citation (``[``): usually the model's own first choice, which it leaves alone. Inside the
    citation only the numbers of sources holding the quote are allowed; an answer that starts as the
    abstention sentence, and everything after the citation's number, is left free. ``pieces`` maps a token id
    to its bytes: byte-level vocabularies split accented letters over two tokens, so the text is matched as
    decoded from all the bytes so far.

    The abstention sentence's first token (``abstain_ids``) is always allowed first, whether or not a source
    starts a quote with it. Where it can also start an answer (``openings``, the sentences' first two tokens:
    Spanish "No" is the sentence's first word and a yes/no question's answer), the second token tells them
    apart: the sentence's own second token, or a quote that goes on from the first (``No [1].``), held to
    the rule from there like any other."""

    def __init__(
        self,
        sources: Sequence[str],
        pieces: TokenBytes,
        prompt_length: int,
        abstain_ids: list[int] | None = None,
        search: tuple[int, ...] = (40, 4000),
        keep: int = 1,
        openings: Sequence[tuple[int, int]] = (),
    ) -> None:
        self.sources = [_flat(s) for s in sources]
        self.piece, self.start, self.search = pieces, prompt_length, search
        self.openings = _openings(openings)
        self.abstain = set(abstain_ids or []) | set(self.openings)
        self.keep = keep + len(self.abstain)  # first tokens remembered, for other drafts (see alternatives)
        self.first_choices: list[int] = []

    def alternatives(self, chosen: int, n: int) -> list[int]:
        """Up to ``n`` other first tokens that start a quote, best first, after the model chose ``chosen`` at
        the answer's first position; none when it chose to decline."""
        if chosen in self.abstain:
            return []
        return [t for t in self.first_choices if t != chosen and t not in self.abstain][:n]

    def _allowed(self, answer: bytes, token: int) -> bool:
        piece = self.piece(token)
        if not piece:
            return False  # a special token (end of turn included): the answer ends with its citation
        if piece.lstrip().startswith(b"["):  # the citation: "[" (or " [") and then a source's number
            return piece.strip() == b"[" and bool(_flat(_text(answer) or ""))
        data = answer + piece
        text = _text(data)
        if text is None or not _flat(text):
            return False
        tail = data[len(text.encode()) :]  # the first bytes of a character still to come
        quote = _flat(text) + (" " if text[-1:].isspace() else "")  # a space must be one in the source too
        return any(_continues(source, quote, tail) for source in self.sources)

    def _choose(self, answer: bytes, row: Any, want: int = 1) -> list[int]:
        quote, bracket, cited = answer.partition(b"[")
        if bracket:
            if cited.strip():
                return []  # the number is written: what follows is free
            flat = _flat(_text(quote) or "")
            holding = [n for n, source in enumerate(self.sources, 1) if flat and flat in source]
            return [t for n in holding for t in self.piece.ids_of(str(n).encode())]
        tried, found = 0, []
        for k in self.search:  # the model's own favourites first; a wider look only when none of them fits
            for token in _descending(row, k)[tried:]:
                if row[token] == float("-inf"):
                    return found
                if self._allowed(answer, token):
                    found.append(token)
                    if len(found) == want:
                        return found
            tried = k
        return found

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if not self.sources:
            return scores
        scores = _copy(scores)
        for row in range(input_ids.shape[0]):
            answer_ids = [int(t) for t in input_ids[row, self.start :]]
            sentence: list[int] = []  # tokens allowed besides the quote: the abstention sentence's
            if answer_ids and answer_ids[0] in self.abstain:
                seconds = self.openings.get(answer_ids[0])
                if seconds is None or (len(answer_ids) > 1 and answer_ids[1] in seconds):
                    continue  # the abstention sentence: free
                if len(answer_ids) == 1:
                    sentence = seconds
            first = not answer_ids
            allowed = self._choose(
                b"".join(self.piece(t) for t in answer_ids), scores[row], self.keep if first else 1
            )
            if first:
                self.first_choices, allowed = allowed, allowed[:1]
                sentence = sorted(self.abstain)
            allowed = allowed + [t for t in sentence if t not in allowed]
            if allowed:
                keep = scores[row, allowed]
                scores[row, :] = float("-inf")
                scores[row, allowed] = keep
        return scores


def _continues(source: str, quote: str, tail: bytes) -> bool:
    """Whether ``quote`` is in ``source`` followed by a character whose encoding starts with ``tail``."""
    if not tail:
        return quote in source
    at = source.find(quote)
    while at >= 0:
        if source[at + len(quote) : at + len(quote) + 1].encode().startswith(tail):
            return True
        at = source.find(quote, at + 1)
    return False


def _text(data: bytes) -> str | None:
    """``data`` as UTF-8 text, without a character still incomplete at its end; None when not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data" and exc.end == len(data):
            return data[: exc.start].decode("utf-8", "strict")
        return None


def _descending(row: Any, k: int) -> list[int]:
    """Ids of the ``k`` highest scores, best first (a torch tensor or a numpy array)."""
    k = min(k, row.shape[-1])
    if hasattr(row, "topk"):
        return row.topk(k).indices.tolist()
    part = np.argpartition(-row, k - 1)[:k]
    return part[np.argsort(-row[part], kind="stable")].tolist()


def answer_processor_list(
    decoding: Decoding,
    prompt_length: int,
    abstain_ids: list[int] | None,
    sources: Sequence[str] = (),
    pieces: TokenBytes | None = None,
    openings: Sequence[tuple[int, int]] = (),
) -> list[Any]:
    """The answer-only processors ``decoding`` asks for (``abstain_ids``: the abstention sentences' first
    tokens, for ``abstain_bias``, and ``openings`` their first two, see :class:`FirstTokenBias`; ``sources``,
    the numbered sources' texts, and ``pieces``, token bytes, for ``extractive``); they take torch tensors or
    numpy arrays alike."""
    processors: list[Any] = []
    if abstain_ids:  # with no bias, for its hesitation only
        processors.append(FirstTokenBias(abstain_ids, decoding.abstain_bias, prompt_length, openings))
    if decoding.no_repeat_ngram_size > 0:
        processors.append(AnswerNoRepeatNGram(decoding.no_repeat_ngram_size, prompt_length))
    if decoding.extractive and sources and pieces is not None:
        keep = decoding.drafts if decoding.drafting else 1
        processors.append(
            QuoteSources(sources, pieces, prompt_length, abstain_ids, keep=keep, openings=openings)
        )
    return processors


def quote_rule(processors: Sequence[Any]) -> QuoteSources | None:
    """The :class:`QuoteSources` among ``processors``, if any."""
    return next((p for p in processors if isinstance(p, QuoteSources)), None)


def support(question: str, source: str, quote: str) -> float:
    """Share of the question's words found around ``quote`` in ``source``: the answer's own sentence in a
    passage that answers repeats much of the question; a quote from a related passage less. The words and
    how they are compared are the relevance gate's (:func:`retrieval.words.word_coverage`: content words on
    their stems, short names, a typo)."""
    text = source.lower()
    at = text.find(quote.lower().strip()) if quote.strip() else -1
    around = text if at < 0 else text[max(0, at - 250) : at + len(quote) + 150]
    return word_coverage(question, [around])


# Drafting is for short answers: a first (greedy) draft still going after this many tokens is streamed as the
# answer, with no other drafts; another draft that reaches it is dropped.
DRAFT_TOKENS = 48


@dataclass
class Draft:
    """One drafted answer: its tokens and the model's log-probability of each."""

    tokens: list[int]
    logprobs: list[float]
    finished: bool = True  # False: a first draft cut at DRAFT_TOKENS, to be continued as the answer

    def text(self, pieces: TokenBytes) -> str:
        """The draft as text (``pieces``: its tokens' bytes)."""
        return b"".join(pieces(t) for t in self.tokens).decode("utf-8", "replace")


def draft_score(
    draft: Draft, pieces: TokenBytes, question: str, sources: Sequence[str], weight: float
) -> float:
    """The draft's log-probability (its tokens' summed: a long quote is not favoured over a short one for
    the many near-certain tokens inside it) plus ``weight`` times the :func:`support` of the quote in the
    source it cites (the first source holding the quote when the citation is missing or wrong)."""
    text = draft.text(pieces)
    quote = text.split("[", 1)[0].strip().rstrip(".")
    cited = re.search(r"\[(\d+)", text)
    number = int(cited.group(1)) if cited else 0
    holding = [s for s in sources if _flat(quote) and _flat(quote) in _flat(s)]
    source = sources[number - 1] if 1 <= number <= len(sources) else ""
    if holding and source not in holding:
        source = holding[0]
    return sum(draft.logprobs) + weight * support(question, source, quote)


def restates(question: str, answer: str) -> bool:
    """Whether ``answer`` only says ``question`` again: every content word it has is one of the question's (on
    its stem), and no word of it says yes or no. Asked "¿Hace falta una GPU?", a FAQ's heading "Hace falta una
    GPU" is such a quote, and it reads as the opposite of the "No." below it."""
    quote = answer.split("[", 1)[0]
    said = {stem(w) for w in content_words(quote)}
    words = {w.strip(".,;:!?¿¡\"'").replace("’", "'") for w in quote.lower().split()}
    if not said or POLARITY_WORDS & words or any(w.endswith("n't") for w in words):
        return False
    return said <= {stem(w) for w in content_words(question)}


# Words that ask for, or do, what cannot be undone: delete, remove, erase...; borrar, eliminar, suprimir...
_UNDOING = re.compile(
    r"\b(?:rm|rmdir|delet\w*|remov\w*|eras\w*|wip(?:e|es|ed|ing)|purg\w*|destr[ou]\w*|uninstall\w*|truncat\w*"
    r"|borr[aeo]\w*|elimin\w*|suprim\w*|desinstal\w*|vac[ií]a\w*)\b",
    re.IGNORECASE,
)
_CODE = re.compile(r"`([^`]+)`")


def destructive_command(question: str, answer: str) -> bool:
    """Whether ``answer`` quotes a command that deletes or removes (``chatbot collections delete NAME``, in a
    code span) to a question that asks for no such thing. Asked "How do I reindex a collection?", a FAQ
    entry's delete command is a quote the model can choose, and running it loses the index."""
    if _UNDOING.search(question):
        return False
    return any(_UNDOING.search(code) for code in _CODE.findall(answer.split("[", 1)[0]))


def best_draft(
    drafts: Sequence[Draft], pieces: TokenBytes, question: str, sources: Sequence[str], weight: float
) -> Draft:
    """The draft with the best :func:`draft_score` (the first of equals: the model's own choice). To a yes/no
    question (:func:`retrieval.words.yes_no_question`), a draft that :func:`restates` it is kept only when
    every draft does: the question said again answers nothing, and it reads as a yes. A draft that quotes a
    :func:`destructive_command` nobody asked for is kept only when every draft does."""
    scores = [draft_score(d, pieces, question, sources, weight) for d in drafts]
    choices = list(range(len(drafts)))
    if len(drafts) > 1 and yes_no_question(question):
        choices = [i for i in choices if not restates(question, drafts[i].text(pieces))] or choices
    if len(drafts) > 1:
        choices = [i for i in choices if not destructive_command(question, drafts[i].text(pieces))] or choices
    return drafts[max(choices, key=lambda i: (scores[i], -i))]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - float(np.max(logits))
    return shifted - np.log(np.exp(shifted).sum())


class Sampler:
    """``(logits, answer so far) -> next token``, as ``model.generate`` chooses with the same settings:
    transformers' repetition penalty (over prompt and answer), :func:`answer_processor_list`, then greedy, or
    temperature, top-k and top-p sampling, in that order. ``suppress``: tokens never chosen for the answer's
    first ``suppress_before`` tokens (end of sequence, for benchmarks that decode a fixed length).

    With ``decoding.drafts`` > 1 under the quoting rule, :meth:`alternatives` gives the other first tokens to
    draft from and :meth:`best` the draft to keep (``question``: what :func:`support` compares with)."""

    def __init__(
        self,
        decoding: Decoding,
        prompt: list[int],
        abstain_ids: list[int],
        seed: int | None = None,
        suppress: frozenset[int] = frozenset(),
        suppress_before: int = 0,
        sources: Sequence[str] = (),
        pieces: TokenBytes | None = None,
        question: str = "",
        openings: Sequence[tuple[int, int]] = (),
    ) -> None:
        self.decoding, self.prompt, self.sources, self.pieces = decoding, prompt, sources, pieces
        self.question, self.suppress_before = question, suppress_before
        self.processors = answer_processor_list(decoding, len(prompt), abstain_ids, sources, pieces, openings)
        self.quote = quote_rule(self.processors)
        self.rng = np.random.default_rng(seed)
        self.banned = list(suppress)
        self.reset()

    def reset(self) -> None:
        """Start a new answer to the same prompt (another draft)."""
        self.seen = set(self.prompt)

    def alternatives(self, chosen: int) -> list[int]:
        """Other first tokens to draft answers from, once ``chosen`` was taken at the answer's first position."""
        if self.quote is None or not self.decoding.drafting:
            return []
        return self.quote.alternatives(chosen, self.decoding.drafts - 1)

    @property
    def hesitation(self) -> float | None:
        """The model's hesitation to answer at the answer's first position, once chosen, or at its second when
        the first can start the abstention sentence and an answer alike (:class:`FirstTokenBias`)."""
        return first_hesitation(self.processors)

    def best(self, drafts: Sequence[Draft]) -> Draft:
        assert self.pieces is not None
        return best_draft(drafts, self.pieces, self.question, self.sources, self.decoding.support_weight)

    def __call__(self, logits: np.ndarray, answer: list[int]) -> int:
        decoding = self.decoding
        if self.banned and len(answer) < self.suppress_before:
            logits[self.banned] = -np.inf
        scores = logits[None, :]
        if decoding.repetition_penalty != 1.0:
            if answer:
                self.seen.add(answer[-1])
            ids = np.fromiter(self.seen, dtype=np.int64)
            picked = scores[0, ids]
            penalty = decoding.repetition_penalty
            scores[0, ids] = np.where(picked < 0, picked * penalty, picked / penalty)
        if self.processors:
            so_far = np.asarray([self.prompt + answer], dtype=np.int64)
            for processor in self.processors:
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
        return int(self.rng.choice(probs.size, p=probs))


class TokenBytes:
    """Each token id's bytes (special tokens have none), and the ids whose bytes are a given string."""

    def __init__(self, table: Sequence[bytes]) -> None:
        self.table = list(table)
        self._ids: dict[bytes, list[int]] | None = None

    def __call__(self, token: int) -> bytes:
        return self.table[token] if 0 <= token < len(self.table) else b""

    def ids_of(self, data: bytes) -> list[int]:
        if self._ids is None:
            self._ids = {}
            for token, piece in enumerate(self.table):
                self._ids.setdefault(piece, []).append(token)
        return self._ids.get(data, [])


def token_bytes(tokenizer: Any) -> TokenBytes:
    """The :class:`TokenBytes` of a Hugging Face tokenizer (byte-level BPE exactly, others through their
    text); built once per tokenizer."""
    table = getattr(tokenizer, "_token_bytes", None)
    if table is None:
        to_byte = {ch: b for b, ch in _byte_alphabet().items()}
        # control tokens: the named special ones, and every other added token marked special (Gemma's
        # <unused0>..., <start_of_image>...), which llama.cpp gives no bytes either
        added = getattr(tokenizer, "added_tokens_decoder", None) or {}
        special = set(tokenizer.all_special_ids) | {
            i for i, t in added.items() if getattr(t, "special", False)
        }
        metaspace = _metaspace(tokenizer)
        pieces = []
        for i, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
            if i in special or token is None:
                pieces.append(b"")
            elif metaspace:  # SentencePiece: "▁" is a space, "<0x0A>" a byte of its own
                fallback = _BYTE_PIECE.fullmatch(token)
                pieces.append(bytes([int(fallback[1], 16)]) if fallback else token.replace("▁", " ").encode())
            elif all(ch in to_byte for ch in token):
                pieces.append(bytes(to_byte[ch] for ch in token))
            else:
                pieces.append(tokenizer.convert_tokens_to_string([token]).encode())
        table = tokenizer._token_bytes = TokenBytes(pieces)
    return table


_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _metaspace(tokenizer: Any) -> bool:
    """Whether the tokenizer writes a space as SentencePiece's "▁" (Gemma, Llama 2) rather than byte-level
    BPE's "Ġ" (GPT-2, SmolLM2, Llama 3)."""
    ids = tokenizer.encode("a b", add_special_tokens=False)
    return any(str(token).startswith("▁") for token in tokenizer.convert_ids_to_tokens(ids))


def _byte_alphabet() -> dict[int, str]:
    """Byte-level BPE's printable stand-in for each byte (GPT-2's ``bytes_to_unicode``)."""
    printable = {
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    }
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars
