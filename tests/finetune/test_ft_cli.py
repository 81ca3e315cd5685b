"""The commands end to end: train, models list/promote/rollback, retrain exit codes, and a 2-process run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from ft_helpers import write_config
from safetensors.torch import load_file
from typer.testing import CliRunner

from chatbot.cli import (
    app,
    train_cmds,  # noqa: F401  (until chatbot/cli/__init__.py imports it)
)
from finetune.checkpoints import read_metrics
from finetune.registry import Registry

ROOT = Path(__file__).parents[2]


def test_train_models_and_retrain_commands(ft_settings, tmp_path):
    config = str(write_config(ft_settings, tmp_path / "settings.yaml"))
    runner = CliRunner()

    def chatbot(*args: str):
        return runner.invoke(app, ["-c", config, *args])

    result = chatbot("train", "--max-steps", "2", "--promote")
    assert result.exit_code == 0, result.output
    assert "version v0001 (current)" in result.output
    assert chatbot("train", "--max-steps", "1").exit_code == 0
    listing = chatbot("models", "list").output
    assert "* v0001" in listing and "  v0002" in listing
    promoted = chatbot("models", "promote", "v0002")
    assert promoted.exit_code == 0 and "llama.cpp: v0002-" in promoted.output  # converted at promotion
    assert Registry(ft_settings).current_id() == "v0002"
    listing = chatbot("models", "list").output
    assert "v0002" in listing and "llama.cpp: gguf q8_0" in listing
    assert "llama.cpp: v0002-" in chatbot("models", "prepare").output  # already converted: found again
    assert "current: v0001" in chatbot("models", "rollback").output
    assert chatbot("models", "promote", "v0042").exit_code == 1
    nothing = chatbot("retrain")
    assert nothing.exit_code == 4 and nothing.output.startswith("nothing-new")
    (tmp_path / "bad.jsonl").write_text('{"messages": []}\n')
    result = chatbot("train", "--chat", str(tmp_path / "bad.jsonl"), "--max-steps", "1")
    assert f"{tmp_path / 'bad.jsonl'}:1:" in result.output


def test_resume_command_reads_the_sources_the_run_started_with(ft_settings, tmp_path):
    cfg = ft_settings.finetune
    no_sources = cfg.model_copy(update={"docs_dirs": [], "chat_files": [], "keep_checkpoints": True})
    settings = ft_settings.model_copy(update={"finetune": no_sources})
    config = str(write_config(settings, tmp_path / "settings.yaml"))
    runner = CliRunner()
    sources = ["--docs", str(cfg.docs_dirs[0]), "--chat", str(cfg.chat_files[0])]
    result = runner.invoke(app, ["-c", config, "train", *sources, "--max-steps", "4", "--run-name", "r"])
    assert result.exit_code == 0, result.output
    run_json = settings.data_dir / "models" / "runs" / "r" / "run.json"
    run_json.write_text(
        run_json.read_text().replace('"status": "done"', '"status": "running"')
    )  # as if killed
    # another step budget would change the run's learning-rate schedule: refused, by name
    result = runner.invoke(app, ["-c", config, "train", "--resume", "--max-steps", "6"])
    assert result.exit_code == 1 and "finetune.max_steps was 4, now 6" in result.output, result.output
    # settings edited since the run started: `--resume` continues with the run's own
    lr = cfg.learning_rate
    edited = settings.model_copy(update={"finetune": no_sources.model_copy(update={"learning_rate": lr * 3})})
    config = str(write_config(edited, tmp_path / "edited.yaml"))
    result = runner.invoke(app, ["-c", config, "train", "--resume"])
    assert result.exit_code == 0, result.output
    assert "version v0002" in result.output and "4 steps" in result.output, result.output[-600:]
    resumed = Registry(settings).get("v0002")
    assert resumed.metrics["resumed_from"] == "checkpoint-4"  # saved at the last step too
    # no step was taken to time: the speed is the one the run logged, not its tokens over a moment's work
    state = json.loads((run_json.parent / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())
    logged = [e["train_tokens_per_second"] for e in state["log_history"] if "train_tokens_per_second" in e]
    assert logged and resumed.metrics["tokens_per_second"] == round(logged[-1], 1)
    assert resumed.settings["learning_rate"] == lr and resumed.settings["max_steps"] == 4
    # the run had taken its 4 steps: no step more, the weights are those the run ended with
    first, again = (
        load_file(str(v.path / "adapter_model.safetensors"))
        for v in (Registry(settings).get("v0001"), resumed)
    )
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    assert runner.invoke(app, ["-c", config, "train", "--resume"]).exit_code == 1  # nothing left to resume


def test_training_goes_on_from_a_version_in_another_run(ft_settings, tmp_path):
    """``--from`` continues a version's adapter (more training in runs that fit the time there is), and
    refuses, by name, a version it does not know, one on another base, and a resume that names another."""
    config = str(write_config(ft_settings, tmp_path / "settings.yaml"))
    runner = CliRunner()

    def chatbot(*args: str, config: str = config):
        return runner.invoke(app, ["-c", config, *args])

    assert chatbot("train", "--max-steps", "2").exit_code == 0
    # at a learning rate too small to move anything, the run ends where v0001 ended, not at a fresh adapter
    # (whose B matrices are zero)
    still = ft_settings.model_copy(
        update={"finetune": ft_settings.finetune.model_copy(update={"learning_rate": 1e-12})}
    )
    still_config = str(write_config(still, tmp_path / "still.yaml"))
    other = tmp_path / "other-docs"
    other.mkdir()
    (other / "new.md").write_text("The night shift hands over at six in the morning. " * 20)
    result = chatbot(
        "train", "--from", "v0001", "--docs", str(other), "--max-steps", "1", "--run-name", "more",
        config=still_config,
    )  # fmt: skip
    assert result.exit_code == 0 and "version v0002" in result.output, result.output
    first, more = (Registry(ft_settings).get(v) for v in ("v0001", "v0002"))
    assert more.parent == "v0001"
    # trained on the other folder, on top of what v0001 was trained on: its manifest holds both, so a retrain
    # from it does not take v0001's data for new
    sources = {entry["source"] for entry in more.manifest["items"].values()}
    assert set(first.manifest["items"]) <= set(more.manifest["items"])
    assert any("new.md" in s for s in sources) and not any(
        "new.md" in e["source"] for e in first.manifest["items"].values()
    )
    a, b = (load_file(str(v.path / "adapter_model.safetensors")) for v in (first, more))
    assert a.keys() == b.keys()
    assert any(k.endswith("lora_B.weight") and a[k].abs().sum() > 0 for k in a)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)

    unknown = chatbot("train", "--from", "v0042", "--max-steps", "1")
    assert unknown.exit_code == 2 and "no model version 'v0042'" in unknown.output, unknown.output
    other_base = tmp_path / "other-base"
    shutil.copytree(ft_settings.models.generator, other_base)
    moved = ft_settings.model_copy(
        update={"models": ft_settings.models.model_copy(update={"generator": str(other_base)})}
    )
    moved_config = str(write_config(moved, tmp_path / "moved.yaml"))
    result = chatbot("train", "--from", "v0001", "--max-steps", "1", config=moved_config)
    assert result.exit_code == 2 and f"trained on models.generator {ft_settings.models.generator!r}" in (
        result.output
    ), result.output
    run_json = ft_settings.data_dir / "models" / "runs" / "more" / "run.json"
    assert '"init": "v0001"' in run_json.read_text()
    run_json.write_text(run_json.read_text().replace('"status": "done"', '"status": "running"'))
    result = chatbot("train", "--resume", "--from", "v0002", config=still_config)
    assert result.exit_code == 2 and "the run started from v0001" in result.output, result.output


def test_training_runs_data_parallel_under_torchrun(ft_settings, tmp_path):
    """The same command on 2 CPU processes (gloo): one run, one version, steps logged once, world size 2."""
    config = write_config(ft_settings, tmp_path / "settings.yaml")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "chatbot",
        "-c",
        str(config),
        "train",
        "--max-steps",
        "3",
        "--run-name",
        "ddp",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = ft_settings.data_dir / "models" / "runs" / "ddp"
    steps = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]
    assert steps == [1, 2, 3]
    versions = Registry(ft_settings).list()
    assert len(versions) == 1 and versions[0].metrics["world_size"] == 2


def test_a_skipped_document_s_name_cannot_drive_the_terminal(ft_settings, tmp_path):
    """`chatbot train --docs` names each document it skips; a name holding an escape sequence (here OSC 52, which
    writes the reader's clipboard) is printed without its control characters."""
    config = str(write_config(ft_settings, tmp_path / "settings.yaml"))
    docs = tmp_path / "new-docs"
    docs.mkdir()
    (docs / "guide.md").write_text("# Guide\n\nThe backup runs every night at two.\n", encoding="utf-8")
    (docs / "notes\x1b]52;c;cm0gLXJmIH4=\x07.pdf").write_bytes(b"not a PDF at all")
    result = CliRunner().invoke(
        app, ["-c", config, "train", "--docs", str(docs), "--export", str(tmp_path / "out.jsonl")]
    )
    assert result.exit_code == 0, result.output
    assert f"warning: skipped {docs}/notes]52;c;cm0gLXJmIH4=.pdf: corrupt PDF" in result.output
    assert "\x1b" not in result.output and "\x07" not in result.output


def test_unreadable_question_files_and_registry_entries_are_one_line_errors(ft_settings, tmp_path):
    """Through the real entry point (`main`, as the `chatbot` command runs): the culprit named, no traceback."""
    config = str(write_config(ft_settings, tmp_path / "settings.yaml"))

    def chatbot(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-c", "from chatbot.cli import main; main()", "-c", config, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=300)

    missing = chatbot("train", "--recipe", "grounded-qa", "--qa", str(tmp_path / "typo.json"))
    assert missing.returncode == 2 and f"no such file: {tmp_path / 'typo.json'}" in missing.stderr
    (tmp_path / "bad.json").write_text('{"version": "1.1"}')
    bad = chatbot("train", "--recipe", "grounded-qa", "--qa", str(tmp_path / "bad.json"), "--max-steps", "1")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr, bad.stderr
    assert f"error: QAFileError: {tmp_path / 'bad.json'}: expected an object with a 'data' list" in bad.stderr
    registry = ft_settings.data_dir / "models" / "registry"
    registry.mkdir(parents=True, exist_ok=True)
    (registry / "current").write_text("v0099")  # a version deleted by hand
    broken = chatbot("retrain")
    assert broken.returncode == 1 and "Traceback" not in broken.stderr, broken.stderr
    assert "error: RegistryError: no model version 'v0099'" in broken.stderr


def test_a_runs_recorded_sources_read_back_as_they_were_given():
    from chatbot.cli.train_cmds import RunSources

    given = RunSources(
        docs=[],
        chat=[Path("chat.jsonl")],
        feedback=False,
        recipe="grounded-qa",
        qa=[Path("a.json"), Path("b.json")],
        split="all",
        limit=40,
        variants=3,
        follow_ups=5,
        only_follow_ups=True,
        off_topic_follow_ups=0.25,
    )
    record = json.loads(json.dumps({"sources": given.record()}))  # as run.json keeps it
    assert RunSources.of(record) == given
    # a run recorded before the grounded-QA options existed resumes as the domain recipe it was
    old = RunSources.of({"sources": {"docs_dirs": ["docs"], "chat_files": [], "use_feedback": True}})
    assert old == RunSources(docs=[Path("docs")], chat=[], feedback=True)
    assert old.recipe == "domain" and old.qa is None and old.variants == 1
