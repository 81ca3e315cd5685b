"""The grounded-QA recipe: examples built with the chain's prompt from a real collection, targets that cite
the gold source, abstention examples, loss on the answer only, and the command that trains on them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ft_helpers import write_config
from typer.testing import CliRunner

from chatbot.cli import app
from chatbot.prompt import ABSTAIN, SYSTEM_PROMPT
from chatbot.recipes import chain_style, grounded_items
from finetune.data import IGNORE, encode_chat
from finetune.grounded import RecipeOptions, answer_target
from finetune.qa import contains_answer, load_squad, qa_paths

PARAGRAPHS = [
    (
        "Biblioteca",
        "La biblioteca abre a las nueve de la mañana y cierra a las ocho de la tarde.",
        [
            ("¿A qué hora abre la biblioteca?", "a las nueve de la mañana"),
            ("¿Cuándo cierra la biblioteca?", "a las ocho de la tarde"),
        ],
    ),
    (
        "Museo",
        "El museo guarda tres mil cuadros del siglo diecinueve.",
        [
            ("¿Cuántos cuadros guarda el museo?", "tres mil cuadros"),
        ],
    ),
    (
        "Library",
        "The library opens at nine in the morning and closes at eight in the evening.",
        [
            ("When does the library open?", "at nine in the morning"),
            ("When does the library close?", "at eight in the evening"),
        ],
    ),
    (
        "Sources",
        "Sources are cited with numbers in square brackets, like [1] or [2].",
        [
            ("How are sources cited?", "with numbers in square brackets"),
        ],
    ),
]


def squad_file(path: Path, impossible: bool = False) -> Path:
    data = []
    for a, (title, context, qas) in enumerate(PARAGRAPHS):
        items = [
            {
                "id": f"{a}-{q}",
                "question": question,
                "answers": [{"text": answer, "answer_start": context.lower().index(answer.lower())}],
            }
            for q, (question, answer) in enumerate(qas)
        ]
        if impossible:
            items.append(
                {
                    "id": f"{a}-x",
                    "question": "¿Quién fundó la biblioteca?",
                    "answers": [],
                    "is_impossible": True,
                }
            )
        data.append({"title": title, "paragraphs": [{"context": context, "qas": items}]})
    path.write_text(json.dumps({"version": "v2.0" if impossible else "1.1", "data": data}), encoding="utf-8")
    return path


def _tokenizer(settings):
    from finetune.models import load_tokenizer

    return load_tokenizer(settings)


def test_examples_use_the_chain_prompt_and_cite_the_gold_source(settings, tmp_path):
    path = squad_file(tmp_path / "qa.json")
    items = grounded_items(
        settings, [path], "all", None, _tokenizer(settings), RecipeOptions(k=3, negative_share=0)
    )
    qa = load_squad(path)
    assert len(items) == len(qa.items) == 6
    positions = set()
    for item, q in zip(items, qa.items, strict=True):
        (sys_role, system), (user_role, user), (role, target) = item.messages
        assert (sys_role, user_role, role) == ("system", "user", "assistant")
        assert system == SYSTEM_PROMPT and user.endswith(f"Question: {q.question}")
        number = int(re.search(r"\[(\d+)\]\.$", target).group(1))
        assert target == answer_target(q.answers[0], number)
        # the cited source is the question's own paragraph, shown whole under its number
        shown = dict(re.findall(r"^\[(\d+)\] \((.+?)\)$", user, flags=re.M))
        assert shown[str(number)] == q.doc
        assert len(shown) == 3  # the gold passage among two distractors: the chat's top_k
        assert qa.contexts[q.doc] in user
        positions.add(number)
    assert len(positions) > 1  # the gold passage is not always in the same place


def test_answer_targets_quote_the_passage_as_written():
    assert answer_target("Los Denver Broncos.", 2) == "Los Denver Broncos [2]."
    # no capital put on a command or a path: the quote is exact
    assert answer_target("make run", 1) == "make run [1]."
    assert answer_target(" var/conversations.sqlite ", 3) == "var/conversations.sqlite [3]."


def test_negative_examples_abstain_in_the_question_language(settings, tmp_path):
    path = squad_file(tmp_path / "qa.json", impossible=True)
    items = grounded_items(
        settings, [path], "all", None, _tokenizer(settings), RecipeOptions(k=2, negative_share=1)
    )
    qa = load_squad(path)
    for item, q in zip(items, qa.items, strict=True):
        target = item.messages[-1][1]
        assert target == ABSTAIN["es" if q.question.startswith("¿") else "en"]
        if q.answerable:  # the gold passage is removed, and no source shown holds the answer
            assert q.doc not in item.messages[1][1]
            assert not contains_answer(item.messages[1][1].split("Question:")[0], q.answers)
        else:  # SQuAD v2.0: its paragraph is shown, it just does not answer the question
            assert f"({q.doc})" in item.messages[1][1]
    assert sum(not q.answerable for q in qa.items) == 4


def test_split_keeps_heldout_articles_out_and_loss_is_on_the_answer_only(settings, tmp_path):
    path = squad_file(tmp_path / "qa.json")
    tokenizer = _tokenizer(settings)
    items = grounded_items(settings, [path], "train", None, tokenizer, RecipeOptions(negative_share=0))
    # even-numbered articles only (Biblioteca, Library); their collection holds no held-out paragraph
    assert {i.source.split(":")[1].split("-")[0] for i in items} == {"0", "2"}
    for item in items:
        assert "Museo" not in item.messages[1][1] and "square brackets" not in item.messages[1][1]
    encoded = encode_chat(items[0].as_messages(), tokenizer, 4096)
    learned = [t for t, label in zip(encoded["input_ids"], encoded["labels"], strict=True) if label != IGNORE]
    assert tokenizer.decode(learned).strip() == items[0].messages[-1][1] + "<|im_end|>"


def test_prompt_style_fits_the_context_window(settings, tmp_path):
    small = settings.model_copy(
        update={"models": settings.models.model_copy(update={"max_context_tokens": 400})}
    )
    from retrieval.types import Hit

    style = chain_style(small, _tokenizer(settings))
    long_hits = [Hit(i, "palabra " * 300, f"d{i}.txt", 1.0) for i in range(3)]
    (_, _), (_, user) = style.messages("¿Qué?", long_hits)
    assert "[2]" not in user and "[…]" in user  # one source, cut to fit, as the chain would show it


def test_train_command_runs_the_recipe_and_resumes_with_its_data(ft_settings, tmp_path):
    path = squad_file(tmp_path / "qa.json")
    config = str(write_config(ft_settings, tmp_path / "settings.yaml"))
    runner = CliRunner()
    args = ["-c", config, "train", "--recipe", "grounded-qa", "--qa", str(path), "--split", "all"]
    result = runner.invoke(app, [*args, "--max-steps", "2", "--run-name", "g1"])
    assert result.exit_code == 0, result.output
    run = json.loads((ft_settings.data_dir / "models" / "runs" / "g1" / "run.json").read_text())
    assert run["sources"]["recipe"] == "grounded-qa" and run["sources"]["qa_files"] == [str(path)]
    # what it trained on, and what a --resume reads: not the settings' documents (ft_settings names a folder)
    assert ft_settings.finetune.docs_dirs
    assert run["sources"]["docs_dirs"] == [] and run["sources"]["chat_files"] == []
    manifest = json.loads((ft_settings.data_dir / "models" / "runs" / "g1" / "manifest.json").read_text())
    assert len(manifest["items"]) == 6 and all(
        ":positive" in v["source"] or ":negative" in v["source"] for v in manifest["items"].values()
    )
    missing = runner.invoke(app, ["-c", config, "train", "--recipe", "grounded-qa"])
    assert missing.exit_code == 2 and "--qa" in missing.output
    bad = runner.invoke(app, ["-c", config, "train", "--recipe", "grounded"])
    assert bad.exit_code == 2 and "grounded-qa" in bad.output


def test_variants_rearrange_each_question_and_search_once(settings, tmp_path):
    from finetune.grounded import make_examples

    path = squad_file(tmp_path / "qa.json")
    qa = load_squad(path)
    from chatbot.recipes import qa_collection

    col = qa_collection(settings, "qa-variants", qa)
    calls = []

    def search(query, k):
        calls.append(query)
        return col.search(query, k)

    style = chain_style(settings, _tokenizer(settings))
    one = make_examples(qa, search, style, RecipeOptions(k=3, negative_share=0.3, variants=1), "qa.json")
    calls.clear()
    four = make_examples(qa, search, style, RecipeOptions(k=3, negative_share=0.3, variants=4), "qa.json")
    assert len(calls) == len(qa.items)  # one search per question, whatever the number of variants
    assert len(four) == 4 * len(qa.items)
    # the first variant is the single-variant recipe itself (a run with variants=1 is unchanged)
    assert [i.messages for i in four[: len(qa.items)]] == [i.messages for i in one]
    for q in qa.items:
        mine = [i for i in four if i.source.split(":")[1] == q.id]
        assert len(mine) == 4 and len({i.source for i in mine}) == 4
    # across 4 arrangements of 6 questions the gold source moves, and some are declined
    assert len({i.key for i in four}) > len(qa.items)
    assert any(i.messages[-1][1] in ABSTAIN.values() for i in four)


def test_exported_examples_train_elsewhere_with_the_same_data(ft_settings, tmp_path):
    """``--export`` writes the recipe's examples and trains nothing; ``--chat`` on that file trains on exactly
    those examples (same content keys, so the same validation split and manifest), with their sources."""
    from finetune.data import read_chat_jsonl

    path = squad_file(tmp_path / "qa.json")
    config = str(write_config(ft_settings, tmp_path / "settings.yaml"))
    runner = CliRunner()
    out = tmp_path / "examples.jsonl"
    args = ["-c", config, "train", "--recipe", "grounded-qa", "--qa", str(path), "--split", "all"]
    result = runner.invoke(app, [*args, "--variants", "2", "--export", str(out)])
    assert result.exit_code == 0, result.output
    assert not (ft_settings.data_dir / "models" / "runs").exists()  # nothing trained
    exported = read_chat_jsonl(out)
    assert not exported.issues and 6 < len(exported.items) <= 12
    assert all(":positive" in i.source or ":negative" in i.source for i in exported.items)
    trained = runner.invoke(
        app, ["-c", config, "train", "--chat", str(out), "--max-steps", "1", "--run-name", "x1"]
    )
    assert trained.exit_code == 0, trained.output
    manifest = json.loads((ft_settings.data_dir / "models" / "runs" / "x1" / "manifest.json").read_text())
    chat = {k: v for k, v in manifest["items"].items() if v["kind"] == "chat"}  # beside the settings' docs
    assert set(chat) == {i.key for i in exported.items}
    assert {v["source"] for v in chat.values()} == {i.source for i in exported.items}


def test_a_sample_is_drawn_from_all_files_before_any_example_is_built(settings, tmp_path):
    """`retrain` replays a few examples drawn from many files: only the drawn questions are searched, and only
    the files they come from get a collection."""
    first = squad_file(tmp_path / "first.json")
    (tmp_path / "more").mkdir()
    second = squad_file(tmp_path / "more" / "second.json")
    tokenizer, options = _tokenizer(settings), RecipeOptions(negative_share=0, seed=7)
    one = grounded_items(settings, [first, second], "all", None, tokenizer, options, sample=1)
    assert len(one) == 1
    assert len(list((settings.data_dir / "qa").iterdir())) == 1  # one file's collection, not both
    drawn = grounded_items(settings, [first, second], "all", None, tokenizer, options, sample=4)
    everything = grounded_items(settings, [first, second], "all", None, tokenizer, options)
    assert len(everything) == 12 and len(drawn) == 4
    assert {i.source for i in drawn} < {i.source for i in everything}
    again = grounded_items(settings, [first, second], "all", None, tokenizer, options, sample=4)
    assert [i.key for i in again] == [i.key for i in drawn]  # the seed fixes the draw
    assert qa_paths([tmp_path, tmp_path / "more", tmp_path / "missing.json"]) == [first, second]
