"""benchmarks/unseen_examples.py: the next stage's examples ask only questions no earlier stage trained on, the
same ones on every run, and a line that is no exported example is named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "unseen_examples.py"


def example(source: str) -> str:
    messages = [{"role": "user", "content": source}, {"role": "assistant", "content": "x [1]."}]
    return json.dumps({"messages": messages, "source": source}) + "\n"


def run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True)


def test_next_stage_holds_only_questions_not_trained_on(tmp_path):
    every = [f"squad.json:q{i}:{'negative' if i % 5 == 0 else 'positive'}" for i in range(40)]
    (tmp_path / "all.jsonl").write_text("".join(map(example, every)))
    # stage 1 saw q0..q9, q3 asked without its passage: the same question either way
    seen = [f"squad.json:q{i}:positive" for i in range(10) if i != 3] + ["squad.json:q3:negative"]
    (tmp_path / "stage1.jsonl").write_text("".join(map(example, seen)))

    outs = []
    for name in ("a", "b"):
        done = run(
            tmp_path / "all.jsonl",
            "--seen",
            tmp_path / "stage1.jsonl",
            "--count",
            25,
            "--out",
            tmp_path / name,
        )
        assert done.returncode == 0, done.stderr
        assert "30 of 40 examples ask a question not seen; 25 written" in done.stdout
        outs.append((tmp_path / name).read_text())
    assert outs[0] == outs[1]  # seeded
    kept = [json.loads(line)["source"].split(":")[1] for line in outs[0].splitlines()]
    assert len(kept) == len(set(kept)) == 25
    assert not set(kept) & {f"q{i}" for i in range(10)}

    # with --variants 2 a question's other arrangement is tagged ":v1": the same question, not an unseen one
    (tmp_path / "all2.jsonl").write_text("".join(map(example, [*every, *(f"{s}:v1" for s in every)])))
    done = run(
        tmp_path / "all2.jsonl", "--seen", tmp_path / "stage1.jsonl", "--count", 100, "--out", tmp_path / "d"
    )
    assert done.returncode == 0 and "60 of 80 examples ask a question not seen" in done.stdout, done.stdout
    kept = {json.loads(line)["source"].split(":")[1] for line in (tmp_path / "d").read_text().splitlines()}
    assert len(kept) == 30 and not kept & {f"q{i}" for i in range(10)}

    (tmp_path / "bad.jsonl").write_text(example("squad.json:q1:positive") + "not json\n")
    done = run(
        tmp_path / "bad.jsonl", "--seen", tmp_path / "stage1.jsonl", "--count", 1, "--out", tmp_path / "c"
    )
    assert done.returncode == 1 and f"{tmp_path / 'bad.jsonl'}:2: not an exported chat example" in done.stderr
