"""benchmarks/grounded_proxy.py, the three steps as a GPU session runs them: the held-out prompts built with the
chain's prompt from a real collection, answers by the embedded model with the shipped adapter in a process
where LangChain cannot be imported (a bare GPU machine has none), and the figures of given answers."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_grounded import PARAGRAPHS, squad_file

from chatbot.prompt import ABSTAIN, SYSTEM_PROMPT
from finetune.qa import contains_answer

ROOT = Path(__file__).resolve().parents[2]
PROXY = ROOT / "benchmarks" / "grounded_proxy.py"

# runs the proxy with every import of LangChain (and of FAISS and sentence-transformers) refused
WITHOUT_LANGCHAIN = """
import importlib.abc, runpy, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("langchain_core", "langchain", "faiss", "sentence_transformers"):
            raise ImportError("refused: " + name)
sys.meta_path.insert(0, Refuse())
sys.argv = sys.argv[1:]
sys.path.insert(0, sys.argv[0].rsplit("/", 1)[0])
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run(*args: str, without_langchain: bool = False) -> str:
    command = (
        [sys.executable, "-c", WITHOUT_LANGCHAIN, str(PROXY)]
        if without_langchain
        else [sys.executable, str(PROXY)]
    )
    done = subprocess.run([*command, *args], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory, tiny_llm_dir: Path, tiny_embedder_dir: Path) -> tuple[Path, Path]:
    """The settings file (tiny models, a fresh data directory) and the prompts built with it."""
    tmp_path = tmp_path_factory.mktemp("proxy")
    config = tmp_path / "settings.yaml"
    models = {"generator": str(tiny_llm_dir), "embedding": str(tiny_embedder_dir), "device": "cpu"}
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "var"), "models": models}))
    out = tmp_path / "prompts.jsonl.gz"
    qa = squad_file(tmp_path / "squad-test.json")
    printed = run(
        "--config", str(config), "prompts", "--squad", str(qa), "--sets", "squad", "--out", str(out)
    )
    assert "squad: 2 questions" in printed
    return config, out


def read(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_the_prompts_are_the_chains_for_the_held_out_questions_present_and_absent(prompts_file):
    rows = read(prompts_file[1])
    held_out = {q for _, _, qas in PARAGRAPHS[1::2] for q, _ in qas}  # odd-numbered articles
    assert sorted(r["question"] for r in rows) == sorted([*held_out, *held_out])
    for r in rows:
        assert r["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
        assert r["question"] in r["messages"][-1]["content"]
        assert sorted(r["abstain"]) == sorted(ABSTAIN.values())
        holding = [i + 1 for i, text in enumerate(r["sources"]) if contains_answer(text, r["answers"])]
        if r["kind"] == "present":
            assert r["gold"] in holding  # the number the target cites is the passage that answers
        else:
            assert r["kind"] == "absent" and r["gold"] is None and not holding


def test_scores_of_given_answers(prompts_file, tmp_path):
    rows = read(prompts_file[1])
    answers = []
    for r in rows:  # right and cited when present; declined when absent
        if r["kind"] == "present":
            answers.append({"margin": -5.0, "answer": f"{r['answers'][0]} [{r['gold']}]."})
        else:
            answers.append({"margin": 2.0, "answer": "something"})
    given = tmp_path / "given.json"
    given.write_text(json.dumps({"answers": answers}))
    printed = run("score", str(prompts_file[1]), str(given), "--bias", "-1.5")
    line = next(row for row in printed.splitlines() if row.startswith("squad"))
    assert line.split()[1:] == ["2", "1.000", "1.000", "1.000", "1.000", "/", "0.000"]
    # a bias low enough declines nothing: the absent questions are then answered with "something"
    printed = run("score", str(prompts_file[1]), str(given), "--bias", "-3")
    line = next(row for row in printed.splitlines() if row.startswith("squad"))
    assert line.split()[-3:] == ["0.000", "/", "0.000"]


@pytest.mark.e2e
def test_the_answer_step_runs_without_langchain(prompts_file, tmp_path):
    config, prompts = prompts_file
    out = tmp_path / "shipped.json"
    run(
        "--config",
        str(config),
        "answer",
        str(prompts),
        "--batch",
        "4",
        "--out",
        str(out),
        without_langchain=True,
    )
    answered = json.loads(out.read_text())
    assert answered["adapter"].endswith("grounded-qa/model") and answered["prompts"] == 4
    for row, a in zip(read(prompts), answered["answers"], strict=True):
        assert isinstance(a["margin"], float)
        # the abstention sentence is banned at the first position: every answer is an attempt
        assert a["answer"] and not any(a["answer"].startswith(s[:8]) for s in row["abstain"])
