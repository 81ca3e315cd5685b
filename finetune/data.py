"""Training data: domain passages, chat examples and feedback, deduplicated, split and tokenised.

Every source becomes a list of :class:`Item` (one passage of a document, or one conversation) keyed by the
hash of its content. The key decides three things, so they stay stable from one run to the next:
deduplication (same key = same item), the train/validation split (a seeded hash, not a shuffle, so an item
never moves between the two when other data arrives) and change detection in ``retrain`` (a key missing from
the current version's manifest is new data).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune.config import FinetuneSettings
from finetune.documents import read_folder
from finetune.feedback import feedback_conversations
from retrieval.config import RetrievalSettings
from retrieval.isolation import ParserProcess

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

ROLES = {"system", "user", "assistant"}
IGNORE = -100  # label value the loss skips (torch cross_entropy's ignore_index)


class DataError(ValueError):
    """No usable training data, or a source that cannot be read."""


@dataclass(frozen=True)
class Issue:
    """A malformed input, with where it is: ``file:line: message``."""

    source: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}"


@dataclass(frozen=True)
class Item:
    """One unit of training data: a passage of a document (``text``) or a conversation (``messages``)."""

    kind: str  # 'doc' | 'chat' | 'feedback'
    source: str  # file (and passage index or line), or feedback id
    key: str  # sha256 of the content: identity for dedup, split and change detection
    text: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None  # (role, content) pairs, hashable

    def as_messages(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages or ()]


@dataclass
class Collected:
    items: list[Item] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # document (or folder) not read -> why


def content_key(kind: str, content: Any) -> str:
    raw = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    # Chat examples and feedback share one key space, so a rated answer equal to an example dedups against it.
    space = "doc" if kind == "doc" else "chat"
    return hashlib.sha256(f"{space}\0{raw}".encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------- sources
def passages(source: str, text: str, max_chars: int) -> list[Item]:
    """Cut a document at blank lines into passages of up to ~``max_chars`` (longer paragraphs stay whole)."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    out: list[str] = []
    for para in paragraphs:
        if out and len(out[-1]) + len(para) + 2 <= max_chars:
            out[-1] += "\n\n" + para
        else:
            out.append(para)
    return [Item("doc", f"{source}#{i}", content_key("doc", p), text=p) for i, p in enumerate(out)]


def doc_items(docs: Iterable[tuple[str, str]], max_chars: int) -> list[Item]:
    """Passages of (source, text) documents: a folder's files, or any other texts given."""
    return [item for source, text in docs for item in passages(source, text, max_chars)]


def _parse_messages(obj: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list):
        raise ValueError('expected an object {"messages": [...]}')
    pairs = []
    for i, msg in enumerate(obj["messages"]):
        if (
            not isinstance(msg, dict)
            or msg.get("role") not in ROLES
            or not isinstance(msg.get("content"), str)
        ):
            raise ValueError(f"message {i} needs a role in {sorted(ROLES)} and a string content")
        pairs.append((msg["role"], msg["content"]))
    if pairs and pairs[0][0] == "assistant":
        raise ValueError("the conversation starts with an assistant message; put a user message first")
    if not any(role == "assistant" and content.strip() for role, content in pairs):
        raise ValueError("no non-empty assistant message to learn from")
    return tuple(pairs)


def read_chat_jsonl(path: Path) -> Collected:
    """Chat examples of a JSONL file; each malformed line becomes an :class:`Issue` with file and line."""
    if not path.is_file():
        raise DataError(f"chat examples file {path} does not exist")
    found = Collected()
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                pairs = _parse_messages(obj)
            except (json.JSONDecodeError, ValueError) as exc:
                found.issues.append(Issue(str(path), lineno, str(exc)))
                continue
            # an exported example keeps the source it was made from (e.g. the question it asks)
            source = obj.get("source") if isinstance(obj.get("source"), str) else f"{path}:{lineno}"
            found.items.append(Item("chat", source, content_key("chat", pairs), messages=pairs))
    return found


def write_chat_jsonl(path: Path, items: Iterable[Item]) -> None:
    """The chat items as a JSONL file that :func:`read_chat_jsonl` reads back, each with its source (documents
    are left out)."""
    from retrieval.files import write_atomic

    lines = [
        json.dumps({"messages": item.as_messages(), "source": item.source}, ensure_ascii=False)
        for item in items
        if item.kind != "doc"
    ]
    write_atomic(Path(path), "".join(f"{line}\n" for line in lines).encode("utf-8"))


def collect(
    settings: FinetuneSettings,
    data_dir: Path,
    docs: Iterable[tuple[str, str]] | None = None,
    docs_dirs: Sequence[Path] | None = None,
    chat_files: Sequence[Path] | None = None,
    use_feedback: bool | None = None,
    retrieval: RetrievalSettings | None = None,
) -> Collected:
    """Every item from the configured (or given) sources, deduplicated by key, with the issues found and the
    documents that could not be read (skipped, named in ``failed``).

    Folders are read with the retrieval loaders under ``retrieval``'s limits (file size, parse time and
    memory, hidden files, links); its defaults when not given."""
    found = Collected()
    all_docs = list(docs or [])
    folders = [Path(f) for f in (settings.docs_dirs if docs_dirs is None else docs_dirs)]
    for folder in folders:
        if not folder.is_dir():
            raise DataError(f"document folder {folder} does not exist")
    retrieval = retrieval or RetrievalSettings()
    with ParserProcess(retrieval) as parser:  # one child process for all folders, started on first use
        for folder in folders:
            text = read_folder(folder, retrieval, parser, exclude=Path(data_dir))
            all_docs.extend(text.docs)
            found.failed.update(text.failed)
    found.items.extend(doc_items(all_docs, settings.passage_chars))
    for path in settings.chat_files if chat_files is None else chat_files:
        part = read_chat_jsonl(Path(path))
        found.items.extend(part.items)
        found.issues.extend(part.issues)
    if settings.use_feedback if use_feedback is None else use_feedback:
        for source, pairs in feedback_conversations(data_dir / "conversations.sqlite"):
            found.items.append(Item("feedback", source, content_key("chat", pairs), messages=pairs))
    for issue in found.issues:
        log.warning("skipped malformed input %s", issue)
    found.items = dedupe(found.items)
    return found


def dedupe(items: Iterable[Item]) -> list[Item]:
    seen: set[str] = set()
    out = []
    for item in items:
        if item.key not in seen:
            seen.add(item.key)
            out.append(item)
    return out


def is_validation(key: str, seed: int, val_fraction: float) -> bool:
    """Stable seeded split: the same item lands on the same side in every run, whatever else is added."""
    h = int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < val_fraction


def split(items: Sequence[Item], seed: int, val_fraction: float) -> tuple[list[Item], list[Item]]:
    train = [i for i in items if not is_validation(i.key, seed, val_fraction)]
    val = [i for i in items if is_validation(i.key, seed, val_fraction)]
    if not val and val_fraction > 0 and len(train) >= 2:
        val.append(train.pop())  # tiny data sets: still hold one item out so perplexity means something
    return train, val


def replay_sample(old: Sequence[Item], n_new: int, ratio: float, seed: int) -> list[Item]:
    """``ratio`` earlier items per new item, drawn with a fixed seed (all of them if there are fewer)."""
    k = min(len(old), round(n_new * ratio))
    return random.Random(seed).sample(list(old), k)


# ---------------------------------------------------------------------------------------------- tokenisation
def pack_texts(
    texts: Iterable[tuple[str, str]],
    tokenizer: PreTrainedTokenizerBase,
    block_size: int,
    keep_tail: bool = False,
) -> list[dict[str, list[int]]]:
    """Concatenate (source, text) passages into ``block_size`` blocks, EOS between documents, no padding.

    Consecutive passages of the same document are joined with a blank line; an EOS token separates different
    documents. The last partial block is dropped (no padding waste) unless ``keep_tail``.
    """
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    previous_doc = None
    for source, text in texts:
        doc = source.rsplit("#", 1)[0]
        if previous_doc is not None:
            stream.extend(
                [eos] if doc != previous_doc else tokenizer.encode("\n\n", add_special_tokens=False)
            )
        stream.extend(tokenizer.encode(text, add_special_tokens=False))
        previous_doc = doc
    if previous_doc is not None:
        stream.append(eos)
    n_full = len(stream) // block_size
    blocks = [stream[i * block_size : (i + 1) * block_size] for i in range(n_full)]
    if keep_tail and len(stream) % block_size > 1:
        blocks.append(stream[n_full * block_size :])
    return [{"input_ids": b, "labels": list(b)} for b in blocks]


def encode_chat(
    messages: list[dict[str, str]], tokenizer: PreTrainedTokenizerBase, max_len: int
) -> dict[str, list[int]] | None:
    """Tokenise with the model's chat template; labels are ``IGNORE`` everywhere but on assistant replies.

    Assistant spans are found in characters: the template rendered up to the generation prompt before each
    assistant message, and up to and including it; the difference (reply plus end-of-turn token) is learned.
    Character offsets then mark the tokens, which is robust to tokens that merge across the boundary.
    """
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not full.startswith(upto) or not upto.startswith(before):
            raise DataError(
                "the chat template does not render conversations by prefix; cannot mask the prompt"
            )
        spans.append((len(before), len(upto)))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"][:max_len]
    labels = [
        tok if any(s <= start and end <= e and end > start for s, e in spans) else IGNORE
        for tok, (start, end) in zip(ids, enc["offset_mapping"][:max_len], strict=True)
    ]
    if all(label == IGNORE for label in labels):
        return None  # the reply starts after max_len tokens: nothing to learn
    return {"input_ids": ids, "labels": labels}


def tokenize(
    items: Sequence[Item],
    tokenizer: PreTrainedTokenizerBase,
    block_size: int,
    keep_tail: bool = False,
    chat_max_len: int | None = None,
) -> list[dict[str, list[int]]]:
    """Packed blocks of the passages followed by one sequence per conversation (at most ``chat_max_len``
    tokens, default ``block_size``)."""
    chat_max_len = chat_max_len or block_size
    docs = sorted((i.source, i.text or "") for i in items if i.kind == "doc")
    examples = pack_texts(_natural(docs), tokenizer, block_size, keep_tail=keep_tail)
    for item in items:
        if item.kind != "doc":
            encoded = encode_chat(item.as_messages(), tokenizer, chat_max_len)
            if encoded is None:
                log.warning(
                    "%s: the assistant reply lies beyond %d tokens; skipped", item.source, chat_max_len
                )
            else:
                examples.append(encoded)
    return examples


def _natural(docs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Order passages by file, then passage number as a number (#10 after #9)."""

    def key(d: tuple[str, str]) -> tuple[str, int]:
        doc, _, idx = d[0].rpartition("#")
        return (doc, int(idx) if idx.isdigit() else 0)

    return sorted(docs, key=key)


@dataclass
class TrainSet:
    """Tokenised train and validation examples, and the manifest of the items they came from."""

    train: list[dict[str, list[int]]]
    val: list[dict[str, list[int]]]
    manifest: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        return manifest_fingerprint(self.manifest)


def manifest_of(items: Sequence[Item], val_items: Sequence[Item] = ()) -> dict[str, Any]:
    """What a model was trained on: item keys by kind with their source (content hashes, not content)."""
    val_keys = {i.key for i in val_items}
    return {
        "items": {
            i.key: {"kind": i.kind, "source": i.source, "split": "val" if i.key in val_keys else "train"}
            for i in [*items, *val_items]
        },
    }


def manifest_fingerprint(manifest: dict[str, Any]) -> str:
    return hashlib.sha256("\n".join(sorted(manifest.get("items", {}))).encode()).hexdigest()


def build_trainset(
    items: Sequence[Item], tokenizer: PreTrainedTokenizerBase, settings: FinetuneSettings
) -> TrainSet:
    """Split ``items`` with the seeded hash, tokenise both sides; error if nothing is left to train on."""
    train_items, val_items = split(items, settings.seed, settings.val_fraction)
    # the last partial block is kept: every passage the manifest records as trained on is trained on (a
    # retrain takes what a manifest holds as seen); one short sequence per data set costs next to nothing
    train = tokenize(
        train_items, tokenizer, settings.block_size, keep_tail=True, chat_max_len=settings.chat_max_tokens
    )
    val = tokenize(
        val_items, tokenizer, settings.block_size, keep_tail=True, chat_max_len=settings.chat_max_tokens
    )
    if not train:
        raise DataError(
            f"no training examples: {len(items)} items gave no text and no chat example; add documents or "
            "chat examples"
        )
    log.info(
        "training set: %d train / %d validation sequences from %d items", len(train), len(val), len(items)
    )
    return TrainSet(train, val, manifest_of(train_items, val_items))
