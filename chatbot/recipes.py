"""What the grounded-QA training recipe needs from the chat side, composed here: the chain's own prompt
(system prompt, numbered sources fitted to the context window, question), its abstention sentence, and a
collection to retrieve distractor passages from.

    items = grounded_items(settings, [Path("squad.json")], split="train", limit=1000, tokenizer=tok)
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chatbot.language import detect_language
from chatbot.prompt import ABSTAIN, SYSTEM_PROMPT, build_prompt
from chatbot.settings import Settings
from finetune.data import Item
from finetune.grounded import PromptStyle, RecipeOptions, make_examples, make_follow_up_examples
from finetune.qa import QASet, load_squad, slug, spread
from retrieval.types import Hit

log = logging.getLogger(__name__)


def chain_style(settings: Settings, tokenizer: Any) -> PromptStyle:
    """The prompt exactly as the chat chain builds it for this tokenizer's chat template and window."""
    from chatbot.llm import to_chat_dicts

    def count(messages: list[Any]) -> int:
        rendered = tokenizer.apply_chat_template(
            to_chat_dicts(messages), add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return len(rendered["input_ids"])

    window = settings.models.max_context_tokens or int(
        getattr(tokenizer, "model_max_length", 8192) if tokenizer.model_max_length < 10**6 else 8192
    )
    limit = window - settings.generation.max_new_tokens

    def messages(
        question: str, hits: Sequence[Hit], history: Sequence[tuple[str, str]] = ()
    ) -> list[tuple[str, str]]:
        built = build_prompt(
            question, hits, history, count, limit, system_prompt=settings.chat.system_prompt or SYSTEM_PROMPT
        )
        return [(m["role"], m["content"]) for m in to_chat_dicts(built.messages)]

    def shown(answer: str, sources: Sequence[str]) -> str:
        from chatbot.answer_format import code_quote
        from chatbot.chain import source_case

        return source_case(code_quote(answer, sources), sources)

    return PromptStyle(messages=messages, abstain=lambda q: ABSTAIN[detect_language(q)], shown=shown)


def qa_collection(settings: Settings, name: str, qa: QASet, under: str = "qa") -> Any:
    """The collection of ``qa``'s documents (written under ``<data_dir>/<under>/<name>/`` and synced, which is
    incremental: a second call with the same documents re-embeds nothing)."""
    from retrieval.collection import Collection

    folder = settings.data_dir / under / name
    folder.mkdir(parents=True, exist_ok=True)
    for doc, text in qa.contexts.items():
        path = folder / doc
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    collection = Collection.open(settings, name)
    collection.sync(folder)
    return collection


def grounded_items(
    settings: Settings,
    qa_files: Sequence[Path],
    split: str,
    limit: int | None,
    tokenizer: Any,
    options: RecipeOptions | None = None,
    sample: int | None = None,
) -> list[Item]:
    """Grounded-QA chat examples from every file (``limit`` questions at most per file, spread over it).

    ``sample`` draws that many questions at random (with ``options.seed``) from all the files together before
    any example is built, so a few examples from many files cost a few searches, not one per question (what
    ``retrain`` replays). Distractors come from a collection of the same split's documents only, so held-out
    paragraphs never appear in training."""
    options = options or RecipeOptions(k=settings.chat.top_k, seed=settings.finetune.seed)
    style = chain_style(settings, tokenizer)
    sets = []
    for path in qa_files:
        qa = load_squad(path).subset(split)
        qa.items = spread(qa.items, limit)
        sets.append((Path(path), qa))
    if sample is not None:
        pool = [(n, q.id) for n, (_, qa) in enumerate(sets) for q in qa.items]
        chosen = set(random.Random(options.seed).sample(pool, min(sample, len(pool))))
        for n, (_, qa) in enumerate(sets):
            qa.items = [q for q in qa.items if (n, q.id) in chosen]
    items: list[Item] = []
    for path, qa in sets:
        if not qa.items:
            continue
        collection = qa_collection(settings, f"qa-{slug(path.stem).lower()}-{split}", qa)
        made = (
            [] if options.only_follow_ups else make_examples(qa, collection.search, style, options, path.name)
        )
        if options.follow_ups:
            more = make_follow_up_examples(
                qa, collection.search, style, options, path.name, lambda t: detect_language(t, "en")
            )
            log.info("%s: %d follow-up examples", path, len(more))
            made += more
        log.info("%s: %d grounded-QA examples (%s split)", path, len(made), split)
        items.extend(made)
    return items
