import json

import pytest
from typer.testing import CliRunner

from chatbot.cli import app
from chatbot.evaluation import (
    QAFileError,
    answer_rank,
    exact_match,
    load_squad,
    normalize_answer,
    spread,
    token_f1,
)

SQUAD = {
    "version": "1.1",
    "data": [
        {
            "title": "Biblioteca",
            "paragraphs": [
                {
                    "context": "La biblioteca abre a las nueve de la mañana y cierra a las ocho de la tarde.",
                    "qas": [
                        {
                            "id": "q1",
                            "question": "¿A qué hora abre la biblioteca?",
                            "answers": [{"text": "a las nueve de la mañana", "answer_start": 19}],
                        },
                        {
                            "id": "q2",
                            "question": "¿Cuándo cierra la biblioteca?",
                            "answers": [{"text": "a las ocho de la tarde", "answer_start": 53}],
                        },
                    ],
                }
            ],
        },
        {
            "title": "Museo",
            "paragraphs": [
                {
                    "context": "El museo guarda tres mil cuadros del siglo diecinueve.",
                    "qas": [
                        {
                            "id": "q3",
                            "question": "¿Cuántos cuadros guarda el museo?",
                            "answers": [{"text": "tres mil", "answer_start": 16}],
                        }
                    ],
                }
            ],
        },
    ],
}


def test_squad_normalisation_and_scores():
    assert normalize_answer("¡El  Museo, del Prado!") == "museo del prado"
    assert exact_match("The Prado.", ["prado"]) == 1.0
    assert token_f1("tres mil cuadros", ["tres mil"]) == pytest.approx(0.8)
    assert token_f1("nada", ["tres mil"]) == 0.0
    assert answer_rank(["x", "Son TRES   mil cuadros"], ["tres mil"]) == 2
    assert answer_rank(["x"], ["tres mil"]) is None


def test_load_and_spread(tmp_path):
    path = tmp_path / "qa.json"
    path.write_text(json.dumps(SQUAD), encoding="utf-8")
    qa = load_squad(path)
    assert len(qa.contexts) == 2 and [i.id for i in qa.items] == ["q1", "q2", "q3"]
    assert [i.id for i in spread(qa.items, 2)] == ["q1", "q2"]
    assert spread(qa.items, None) == qa.items


def test_malformed_file_names_the_place(tmp_path):
    bad = {
        "data": [{"title": "t", "paragraphs": [{"context": "c", "qas": [{"question": "q", "answers": []}]}]}]
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(QAFileError, match=r"data\[0\]\.paragraphs\[0\]\.qas\[0\]"):
        load_squad(path)
    path.write_text("{oops")
    with pytest.raises(QAFileError, match="bad.json"):
        load_squad(path)


def test_eval_rag_command_builds_the_collection_and_reports(tmp_path, app_env):
    path = tmp_path / "qa.json"
    path.write_text(json.dumps(SQUAD), encoding="utf-8")
    out = tmp_path / "report.json"
    args = ["eval", "rag", "--qa", str(path), "--collection", "squad", "--json", str(out)]
    result = CliRunner().invoke(app, args, env=app_env)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["questions"] == 3
    assert 0 <= report["hit@1"] <= report["hit@5"] <= report["hit@10"] <= 1
    assert report["hit@10"] == 1.0  # two documents only: every answer is within the top 10
    for key in ("mrr@10", "exact_match", "f1", "abstention_rate", "ttft_p50_s", "tokens_per_s"):
        assert key in report
    # the collection now exists: a second run reuses it
    again = CliRunner().invoke(app, [*args[:-2], "--retrieval-only"], env=app_env)
    assert again.exit_code == 0 and "Indexed" not in again.output


def test_rag_scorer_scores_a_model_through_the_chain(tmp_path, settings):
    from chatbot.evaluation import rag_scorer
    from finetune.models import load_generator

    path = tmp_path / "qa.json"
    path.write_text(json.dumps(SQUAD), encoding="utf-8")
    score = rag_scorer(settings, [path], "gate-eval", limit=2)
    gen = load_generator(settings)
    value = score(gen.model, gen.tokenizer)
    # each question asked with its passage and without it: F1, and the shares declined either way
    assert set(value) == {"f1", "abstain_when_absent", "abstain_when_present"}
    assert all(0.0 <= v <= 1.0 for v in value.values())
    from retrieval.collection import Collection

    assert "gate-eval-qa" in Collection.list(settings)  # built from the file's contexts on first use


def test_answer_scores_ignore_citations_and_credit_the_cited_source():
    from chatbot.evaluation import answer_contained, citation_correct, strip_citations
    from chatbot.service import Source

    assert strip_citations("Los Denver Broncos [2].") == "Los Denver Broncos."
    assert token_f1(strip_citations("Los Denver Broncos [2]."), ["Denver Broncos"]) == 1.0
    assert answer_contained("Ganaron los Denver Broncos [1]", ["Denver Broncos"]) == 1.0
    assert answer_contained("Denver", ["Denver Broncos"]) == 0.0
    sources = [
        Source(1, "a.txt", "Carolina Panthers", 1.0, "a.txt"),
        Source(2, "b.txt", "los Denver Broncos", 0.9, "b.txt"),
    ]
    assert citation_correct("Denver Broncos [2].", sources, ["Denver Broncos"]) == 1.0
    assert citation_correct("Denver Broncos [1].", sources, ["Denver Broncos"]) == 0.0
    assert citation_correct("Denver Broncos.", sources, ["Denver Broncos"]) == 0.0  # cites nothing


def test_eval_modes_and_split(tmp_path, app_env):
    path = tmp_path / "qa.json"
    path.write_text(json.dumps(SQUAD), encoding="utf-8")
    out = tmp_path / "report.json"
    args = ["eval", "rag", "--qa", str(path), "--collection", "squad", "--json", str(out)]
    result = CliRunner().invoke(
        app, [*args, "--split", "heldout", "--mode", "present", "--mode", "absent"], env=app_env
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["questions"] == 1 and report["split"] == "heldout"  # the Museo article only
    for key in ("f1", "answer_contained", "abstain_when_present", "abstain_when_absent", "tokens_per_answer"):
        assert 0 <= report[key] <= 100, key
    assert report["modes"] == ["present", "absent"]
    bad = CliRunner().invoke(app, [*args, "--mode", "sometimes"], env=app_env)
    assert bad.exit_code == 2 and "sometimes" in bad.output


def test_absent_mode_hides_the_questions_own_paragraph(settings, tmp_path):
    from chatbot.evaluation import excluding
    from retrieval.collection import Collection

    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(4):
        (folder / f"d{i}.txt").write_text(f"Paragraph {i} about the museum's collection.", encoding="utf-8")
    col = Collection.open(settings, "museo")
    col.sync(folder)
    assert "d0.txt" in {h.source for h in col.search("Paragraph 0 museum", 4)}
    hits = excluding(col, "d0.txt")("Paragraph 0 museum", 3)
    assert len(hits) == 3 and "d0.txt" not in {h.source for h in hits}


def test_squad_v2_unanswerable_questions_are_read(tmp_path):
    data = json.loads(json.dumps(SQUAD))
    data["data"][0]["paragraphs"][0]["qas"].append(
        {"id": "x", "question": "¿Quién la fundó?", "answers": [], "is_impossible": True}
    )
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    qa = load_squad(path)
    assert [i.answerable for i in qa.items] == [True, True, False, True]  # the new one is in article 0
    assert [i.id for i in qa.subset("heldout").items] == ["q3"]


@pytest.mark.parametrize("threshold", [-50.0, 50.0])
def test_unsure_answers_are_counted_beside_declines(tmp_path, settings, threshold):
    from chatbot.evaluation import ensure_collection, evaluate_rag
    from chatbot.service import ChatService

    data_file = tmp_path / "qa.json"
    data_file.write_text(json.dumps(SQUAD), encoding="utf-8")
    settings = settings.model_copy(
        update={"chat": settings.chat.model_copy(update={"unsure_hesitation": threshold})}
    )
    service = ChatService(settings)
    qa = load_squad(data_file)
    ensure_collection(service, "squad", qa)
    report = evaluate_rag(service, "squad", qa.items, modes=("present", "absent"), per_answer=True)
    assert [a[0] for a in report["answers"]] == ["present", "absent"] * 3
    answered = [a for a in report["answers"] if not a[2]]
    assert answered and all(isinstance(a[1], float) for a in answered)
    for mode in ("present", "absent"):
        declined, either = report[f"abstain_when_{mode}"], report[f"abstain_or_unsure_when_{mode}"]
        # -50: every answer written is unsure; 50: none is
        assert either == (1.0 if threshold < 0 else declined)
    assert ("f1_unsure" in report) == (threshold < 0) and ("f1_sure" in report) == (threshold > 0)
