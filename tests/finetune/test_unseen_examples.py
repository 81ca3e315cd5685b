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


def test_a_stage_drawn_in_shares_takes_other_arrangements_of_seen_questions(tmp_path):
    every = [
        f"{f}.json:q{i}:{'negative' if i % 4 == 0 else 'positive'}"
        for f in ("a-en", "b-es")
        for i in range(20)
    ]
    variants = [*every, *(f"{s}:v1" for s in every)]
    (tmp_path / "all.jsonl").write_text("".join(map(example, variants)))
    # a second export holding some of the same examples and new third arrangements of the English file
    third = [f"{s}:v2" for s in every if s.startswith("a-en")]
    (tmp_path / "en.jsonl").write_text("".join(map(example, [*third, *every[:5]])))
    seen = every  # the first stage trained on every question's first arrangement
    (tmp_path / "stage1.jsonl").write_text("".join(map(example, seen)))

    def draw(out):
        return run(
            tmp_path / "en.jsonl",
            tmp_path / "all.jsonl",
            "--seen",
            tmp_path / "stage1.jsonl",
            "--arrangements",
            "--take=-en\\.json:=all",
            "--take",
            ":negative=3",
            "--take",
            ".=4",
            "--out",
            out,
        )

    done = draw(tmp_path / "s2")
    assert done.returncode == 0, done.stderr
    # 100 distinct examples (the 5 in both exports counted once), 40 first arrangements seen
    assert "60 of 100 examples ask an arrangement not seen; 47 written" in done.stdout, done.stdout
    kept = [json.loads(line)["source"] for line in (tmp_path / "s2").read_text().splitlines()]
    assert len(set(kept)) == 47 and not set(kept) & set(seen)
    assert sum(s.startswith("a-en") for s in kept) == 40  # every English arrangement not trained on
    spanish = [s for s in kept if s.startswith("b-es")]
    assert len(spanish) == 7 and sum(":negative" in s for s in spanish) >= 3
    assert draw(tmp_path / "again").returncode == 0
    assert (tmp_path / "again").read_text() == (tmp_path / "s2").read_text()  # seeded

    done = run(
        tmp_path / "all.jsonl", "--seen", tmp_path / "stage1.jsonl", "--take", "(=2", "--out", tmp_path / "x"
    )
    assert done.returncode == 2 and "'(=2'" in done.stderr
