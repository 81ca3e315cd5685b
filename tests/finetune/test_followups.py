"""Follow-up examples of the grounded-QA recipe: a question's subject taken out by the rules of its language,
pairs of questions of one article, and two-turn chat examples built with the chain's prompt from a real
collection, the held-out articles left out."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatbot.cli import app
from chatbot.prompt import ABSTAIN, SYSTEM_PROMPT
from chatbot.recipes import chain_style, grounded_items
from finetune.followups import elide, follow_ups, names_in, pronoun_of, with_and
from finetune.grounded import RecipeOptions, answer_target
from finetune.qa import contains_answer, load_squad

ARTICLES = [
    (
        "Museo Lendínez",
        [
            (
                "El Museo Lendínez abre de martes a domingo. La entrada general cuesta ocho euros.",
                [
                    ("¿Qué días abre el Museo Lendínez?", "de martes a domingo"),
                    ("¿Cuánto cuesta la entrada general del Museo Lendínez?", "ocho euros"),
                ],
            ),
            (
                "La colección del Museo Lendínez reúne cuatrocientas piezas de vidrio soplado.",
                [("¿Cuántas piezas reúne la colección del Museo Lendínez?", "cuatrocientas piezas")],
            ),
        ],
    ),
    (
        "Biblioteca Central",
        [
            (
                "La Biblioteca Central presta libros durante tres semanas.",
                [("¿Cuánto dura un préstamo?", "tres semanas")],
            )
        ],
    ),
    (
        "Greyhaven Line",
        [
            (
                "The Greyhaven Line was a shipping company founded by the Tarrant brothers in 1871. It painted "
                "its funnels dark green.",
                [
                    ("Who founded the Greyhaven Line?", "the Tarrant brothers"),
                    ("What colour were the Greyhaven Line's funnels?", "dark green"),
                ],
            ),
            (
                "At its peak, in 1910, the company owned fourteen ships.",
                [("How many ships did the Greyhaven Line own at its peak?", "fourteen ships")],
            ),
        ],
    ),
    (
        "Port Hollin",
        [("Port Hollin has a population of 2,400.", [("How many people live in Port Hollin?", "2,400")])],
    ),
]


def squad_file(path: Path) -> Path:
    data = []
    for a, (title, paragraphs) in enumerate(ARTICLES):
        paras = []
        for p, (context, qas) in enumerate(paragraphs):
            items = [
                {
                    "id": f"{a}-{p}-{q}",
                    "question": question,
                    "answers": [{"text": answer, "answer_start": context.index(answer)}],
                }
                for q, (question, answer) in enumerate(qas)
            ]
            paras.append({"context": context, "qas": items})
        data.append({"title": title, "paragraphs": paras})
    path.write_text(json.dumps({"version": "1.1", "data": data}), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("question", "doc", "language", "pronoun", "expected"),
    [
        # English: a possessive becomes "its", a place "there", the subject after an auxiliary "it"
        (
            "What colour were the Greyhaven Line's funnels?",
            "greyhaven-line-000.txt",
            "en",
            "it",
            "What colour were its funnels?",
        ),
        (
            "How many people live in Port Calloway?",
            "port-calloway-002.txt",
            "en",
            "it",
            "How many people live there?",
        ),
        ("When did the Greyhaven Line close?", "greyhaven-line-001.txt", "en", "it", "When did it close?"),
        ("Who founded the Greyhaven Line?", "greyhaven-line-000.txt", "en", "it", "Who founded it?"),
        # a person is "he" or "she", as the article calls them
        (
            "Which record label signed Ambrose Keel in 1957?",
            "ambrose-keel-001.txt",
            "en",
            "he",
            "Which record label signed him in 1957?",
        ),
        (
            "How soon did Carrick confirm Ellingham's first comet?",
            "harriet-ellingham-000.txt",
            "en",
            "she",
            "How soon did Carrick confirm her first comet?",
        ),
        # Spanish: "de X" is dropped with its article, "en X" becomes "allí", a subject after its verb goes
        (
            "¿Cuánto cuesta la audioguía del Museo Lendínez?",
            "museo-lendinez-000.txt",
            "es",
            "it",
            "¿Cuánto cuesta la audioguía?",
        ),
        (
            "¿Cuántos alumnos se matricularon en Castrovélez en 1620?",
            "universidad-de-castrovelez-001.txt",
            "es",
            "it",
            "¿Cuántos alumnos se matricularon allí en 1620?",
        ),
        (
            "¿En qué horario abre el Museo Lendínez los sábados?",
            "museo-lendinez-000.txt",
            "es",
            "it",
            "¿En qué horario abre los sábados?",
        ),
        (
            "¿A qué altitud se encuentra Valdemora del Cierzo?",
            "valdemora-del-cierzo-000.txt",
            "es",
            "it",
            "¿A qué altitud se encuentra?",
        ),
    ],
)
def test_the_subject_is_taken_out_by_the_rules_of_the_language(question, doc, language, pronoun, expected):
    assert elide(question, doc, language, pronoun) == expected


@pytest.mark.parametrize(
    ("question", "doc", "language"),
    [
        (
            "How many islands make up the Serrin archipelago?",
            "serrin-islands-expedition-000.txt",
            "en",
        ),  # a modifier
        ("Who bought Amberlow Bank in 2013?", "hessel-mercantile-bank-003.txt", "en"),  # another name
        (
            "¿Funciona Almendro 2.0 con Python 3.8?",
            "almendro-notas-version-000.txt",
            "es",
        ),  # the name goes on
        (
            "¿Qué consecuencia tuvo dentro de Unión Cívica el plan?",
            "union-civica-002.txt",
            "es",
        ),  # "dentro de"
        (
            "¿Desde qué localidad sale la pista hasta Cerro Tavernal?",
            "cerro-tavernal-001.txt",
            "es",
        ),  # "hasta X"
        ("¿Cuánto dura un préstamo?", "biblioteca-central-000.txt", "es"),  # names no subject
    ],
)
def test_no_follow_up_where_no_rule_applies_cleanly(question, doc, language):
    assert elide(question, doc, language) is None


def test_pronoun_of_an_article_comes_from_its_first_paragraph():
    assert pronoun_of("Harriet Ellingham was an astronomer. She found her first comet in 1866.") == "she"
    assert (
        pronoun_of("Ambrose Keel was a saxophonist. He recorded his first album in 1957 with his band.")
        == "he"
    )
    # an institution whose founder is a man is still "it"
    assert (
        pronoun_of("The Greyhaven Line was a company. Its founder sold it when he retired; it closed.")
        == "it"
    )


def test_pairs_stay_within_an_article_and_the_first_question_names_the_subject(tmp_path):
    qa = load_squad(squad_file(tmp_path / "qa.json"))
    pairs = follow_ups(qa.subset("train"), lambda t: "es" if "¿" in t else "en", seed=1)
    spanish = [p for p in pairs if "¿" in p.question]
    assert spanish and len(spanish) < len(pairs)  # the museum's, and the shipping line's
    assert not follow_ups(qa.subset("heldout"), lambda t: "es", seed=1)  # no question names its subject
    for pair in pairs:
        assert pair.first.article == pair.second.article and pair.first.id != pair.second.id
        assert "Lendínez" in pair.first.question or "Greyhaven" in pair.first.question
        assert "Lendínez" not in pair.question and "Greyhaven" not in pair.question
    assert any(p.question.endswith("cuánto cuesta la entrada general?") for p in spanish)
    assert follow_ups(qa.subset("train"), lambda t: "es" if "¿" in t else "en", seed=1, limit=1)[0] in pairs


def _tokenizer(settings):
    from finetune.models import load_tokenizer

    return load_tokenizer(settings)


def test_follow_up_examples_hold_the_first_turn_then_the_sources_and_the_follow_up(settings, tmp_path):
    path = squad_file(tmp_path / "qa.json")
    options = RecipeOptions(k=2, negative_share=0, follow_ups=10, seed=3)
    items = grounded_items(settings, [path], "train", None, _tokenizer(settings), options)
    two_turn = [i for i in items if ":follow-up-" in i.source]
    assert len(two_turn) >= 4 and len(items) == 6 + len(two_turn)  # the 6 training-article questions too
    qa = load_squad(path)
    by_id = {q.id: q for q in qa.items}
    for item in two_turn:
        roles = [role for role, _ in item.messages]
        assert roles == ["system", "user", "assistant", "user", "assistant"]
        system, first, first_answer, turn, target = (c for _, c in item.messages)
        assert system == SYSTEM_PROMPT and re.fullmatch(r".+ \[[12]\]\.", first_answer)
        assert "Lendínez" in first or "Greyhaven" in first
        # the first answer as the chat shows and stores it: "the Tarrant brothers" → "The Tarrant brothers [1]."
        reference = next(q for q in qa.items if q.question == first).answers[0]
        assert first_answer[0].isupper() and first_answer[:-5] == reference[:1].upper() + reference[1:]
        q = by_id[item.source.split(":")[1]]
        asked = turn.split("Question: ")[-1]
        assert "Lendínez" not in asked and "Greyhaven" not in asked and asked != q.question
        number = int(re.search(r"\[(\d+)\]\.$", target).group(1))
        assert target == answer_target(q.answers[0], number)
        shown = dict(re.findall(r"^\[(\d+)\] \((.+?)\)$", turn, flags=re.M))
        assert shown[str(number)] == q.doc  # the cited source is the question's own paragraph
        assert "Biblioteca" not in turn and "Hollin" not in turn  # held-out articles never shown


def test_follow_up_examples_abstain_without_their_passage(settings, tmp_path):
    path = squad_file(tmp_path / "qa.json")
    options = RecipeOptions(k=2, negative_share=1, follow_ups=10)
    items = grounded_items(settings, [path], "train", None, _tokenizer(settings), options)
    two_turn = [i for i in items if ":follow-up-negative" in i.source]
    assert two_turn and all(
        i.messages[-1][1] == ABSTAIN["es" if "¿" in i.messages[3][1] else "en"] for i in two_turn
    )
    qa = load_squad(path)
    for item in two_turn:
        q = next(q for q in qa.items if q.id == item.source.split(":")[1])
        assert not contains_answer(item.messages[3][1].split("Question:")[0], q.answers)


def test_export_writes_the_follow_ups_and_a_run_records_them(ft_settings, tmp_path):
    from ft_helpers import write_config

    path = squad_file(tmp_path / "qa.json")
    config = str(write_config(ft_settings, tmp_path / "settings.yaml"))
    args = ["-c", config, "train", "--recipe", "grounded-qa", "--qa", str(path), "--follow-ups", "10"]
    out = tmp_path / "examples.jsonl"
    result = CliRunner().invoke(app, [*args, "--export", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert sum(len(r["messages"]) == 5 for r in rows) >= 4 and sum(len(r["messages"]) == 3 for r in rows) == 6
    only = CliRunner().invoke(app, [*args, "--only-follow-ups", "--export", str(out)])
    assert only.exit_code == 0, only.output
    alone = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r for r in rows if len(r["messages"]) == 5] == alone
    result = CliRunner().invoke(app, [*args, "--max-steps", "1", "--run-name", "f1"])
    assert result.exit_code == 0, result.output
    run = json.loads((ft_settings.data_dir / "models" / "runs" / "f1" / "run.json").read_text())
    assert run["sources"]["follow_ups"] == 10


def test_off_topic_follow_ups_decline_a_question_about_another_article(settings, tmp_path):
    path = squad_file(tmp_path / "qa.json")
    tokenizer = _tokenizer(settings)
    plain = grounded_items(
        settings, [path], "train", None, tokenizer, RecipeOptions(k=2, follow_ups=10, only_follow_ups=True)
    )
    options = RecipeOptions(k=2, follow_ups=10, only_follow_ups=True, off_topic_share=1.0)
    items = grounded_items(settings, [path], "train", None, tokenizer, options)
    off = [i for i in items if i.source.endswith(":follow-up-off-topic")]
    # one more for each follow-up; the others are exactly those made without the option
    assert len(off) == len(plain) and [i.messages for i in items if i not in off] == [
        i.messages for i in plain
    ]
    qa = load_squad(path)
    by_id = {q.id: q for q in qa.items}
    for item in off:
        first_id, asked_id = item.source.split(":")[1].split("+")
        first, asked = by_id[first_id], by_id[asked_id]
        assert first.article != asked.article  # the museum after the shipping line, or the other way
        assert item.messages[1][1] == first.question and item.messages[3][1].endswith(
            f"Question: {asked.question}"
        )
        assert item.messages[-1][1] == ABSTAIN["es" if asked.question.startswith("¿") else "en"]
        assert not contains_answer(item.messages[3][1].split("Question:")[0], asked.answers)


def test_the_chain_style_shows_an_answer_as_the_chat_does(settings):
    style = chain_style(settings, _tokenizer(settings))
    assert style.shown("por orden de llegada [2].", ["Las plazas se dan por orden de llegada."]) == (
        "Por orden de llegada [2]."
    )
    command = "Para indexar una carpeta, ejecute:\n\n    chatbot index mi-coleccion /ruta/a/la/carpeta\n"
    assert style.shown("chatbot index mi-coleccion /ruta/a/la/carpeta [1].", [command]) == (
        "`chatbot index mi-coleccion /ruta/a/la/carpeta` [1]."
    )
    assert style.shown("`var/conversations.sqlite` [1].", ["in `var/conversations.sqlite`"]) == (
        "`var/conversations.sqlite` [1]."
    )


def test_and_lowers_the_first_word_unless_the_article_writes_it_as_a_name():
    article = "Harriet Ellingham wrote to Carrick in May. She found her first comet in 1866."
    names = names_in(article)
    assert (
        "Carrick" in names and "She" not in names and "Harriet" not in names
    )  # a sentence's start is no name
    opened = next(s for s in range(100) if random.Random(s).random() < 0.5)  # a draw that adds "And"
    assert (
        with_and("When did she find it?", "en", random.Random(opened), names) == "And when did she find it?"
    )
    assert with_and("Carrick confirmed it when?", "en", random.Random(opened), names) == (
        "And Carrick confirmed it when?"
    )
    assert with_and("¿Cuándo lo confirmó?", "es", random.Random(opened), names) == "¿Y cuándo lo confirmó?"
