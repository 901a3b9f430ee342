"""``gym-nemo agent-rollout``: an agent workflow over task rows as a rollout source, with the tiny model behind the
gateway; records token-exact, summary as ``gym-nemo rollout`` prints, resume after a kill, failures as infra
errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("transformers")

from gym_nemo.agents.workflows import CALCULATOR_ROWS
from gym_nemo.cli import main

WORKFLOW = "gym_nemo.agents.workflows:calculator_workflow"


def broken_workflow(row, base_url):
    raise RuntimeError("the agent crashed")


def write_rows(path: Path, n: int = 2) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in CALCULATOR_ROWS[:n]))
    return path


def rollout(tasks: Path, out: Path, model: Path, *extra: str) -> int:
    args = ["agent-rollout", "--tasks", str(tasks), "--out", str(out), "--policy", "hf", "--model", str(model)]
    return main([*args, "--max-tokens", "12", "--concurrency", "2", "--timeout-s", "120", *extra])


def test_records_summary_and_resume(tiny_model_dir, tmp_path, capsys) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tasks, out = write_rows(tmp_path / "rows.jsonl"), tmp_path / "runs.jsonl"
    assert rollout(tasks, out, tiny_model_dir, "--workflow", WORKFLOW, "--group-size", "2") == 0
    printed = capsys.readouterr().out
    assert "mean reward" in printed and "infra-error rate" in printed and "wrote 4 episodes" in printed
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert Counter(r["group"] for r in rows) == {0: 2, 1: 2}
    for row in rows:
        assert row["infra_error"] is None and row["segments"] and row["num_turns"] >= 1
        ids = row["prompt_ids"] + row["completion_ids"]
        assert len(row["completion_mask"]) == len(row["completion_ids"]) == len(row["completion_logprobs"])
        assert any(row["completion_mask"])
        policy_ids = [t for t, m in zip(row["completion_ids"], row["completion_mask"], strict=True) if m]
        assert set(policy_ids) <= set(ids)  # the sampled ids are in the stream verbatim
        assert tokenizer.decode(ids, skip_special_tokens=False)
    # a kill mid-run: one whole line and a torn one survive; --resume plays only the missing three
    lines = out.read_text().splitlines()
    out.write_text(lines[0] + "\n" + lines[1][:30])
    assert rollout(tasks, out, tiny_model_dir, "--workflow", WORKFLOW, "--group-size", "2", "--resume") == 0
    assert "wrote 3 episodes" in capsys.readouterr().out
    resumed = [json.loads(line) for line in out.read_text().splitlines()]
    assert Counter(r["group"] for r in resumed) == {0: 2, 1: 2}


def test_failing_workflows_and_endpoints_are_infra_errors(tiny_model_dir, tmp_path, capsys) -> None:
    tasks = write_rows(tmp_path / "rows.jsonl", 1)
    out = tmp_path / "broken.jsonl"
    assert rollout(tasks, out, tiny_model_dir, "--workflow", "tests.test_agent_rollout:broken_workflow") == 0
    [row] = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["truncated"] and row["reward"] == 0.0 and "RuntimeError: the agent crashed" in row["infra_error"]
    assert "infra-error rate  1.0000" in capsys.readouterr().out
    out = tmp_path / "endpoint.jsonl"
    assert rollout(tasks, out, tiny_model_dir, "--endpoint", "http://127.0.0.1:9") == 0  # nothing listens there
    [row] = [json.loads(line) for line in out.read_text().splitlines()]
    assert "POST http://127.0.0.1:9/run failed" in row["infra_error"]


def test_bad_task_files_are_clear_errors(tiny_model_dir, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "x"}\nnot json\n')
    assert rollout(bad, tmp_path / "o.jsonl", tiny_model_dir, "--workflow", WORKFLOW) == 2
    assert "bad.jsonl:2: not valid JSON" in capsys.readouterr().err
    assert rollout(tmp_path / "none.jsonl", tmp_path / "o.jsonl", tiny_model_dir, "--workflow", WORKFLOW) == 2
    assert rollout(bad, tmp_path / "o.jsonl", tiny_model_dir, "--workflow", "no_such_module:f") == 2
