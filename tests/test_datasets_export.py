"""Rollouts out as datasets: a real CodeExec run (reference policy, tool calls, mixed rewards) exported for SFT and
DPO, loaded with ``datasets`` and trained one step each with TRL's SFTTrainer and DPOTrainer on the tiny model; bad
input is refused before anything is written, and a failed write leaves the previous dataset in place."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("datasets", reason="the [export] extra is not installed")

from datasets import load_from_disk

from gym_nemo.cli import main
from gym_nemo.datasets_export import export_run, read_run

TASKS = ["HumanEval/0", "HumanEval/1"]


@pytest.fixture(scope="module")
def run_file(tmp_path_factory) -> Path:
    """16 episodes on two tasks; the reference policy breaks half its answers: some groups have mixed rewards."""
    import gym_nemo
    from gym_nemo.policies import ReferencePolicy
    from gym_nemo.rollout import collect_rollouts

    out = tmp_path_factory.mktemp("run") / "run.jsonl"
    envs = gym_nemo.make_vec("nemo/CodeExec-v0", 2, "sync", task_ids=TASKS, timeout_s=5)
    try:
        policy = ReferencePolicy(envs.get_attr("tasks")[0], corrupt_rate=0.5, seed=1)
        collect_rollouts(envs, policy, 16, env_id="nemo/CodeExec-v0", seed=0, out=out, progress=False)
    finally:
        envs.close()
    rewards = {
        t: {r["reward"] for r in map(json.loads, out.read_text().splitlines()) if r["task_id"] == t} for t in TASKS
    }
    assert any(len(r) > 1 for r in rewards.values()), rewards  # at least one mixed group to make DPO pairs from
    return out


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def trl_args(config_cls, tmp_path: Path, **extra):
    settings = dict(
        output_dir=str(tmp_path / config_cls.__name__),
        max_steps=1,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    return config_cls(**{**settings, **extra})


def test_sft_export_trains_with_trl(run_file: Path, tiny_model_dir, tmp_path: Path, capsys) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    assert main(["export", str(run_file), "--format", "sft", "--out", str(tmp_path / "sft")]) == 0
    assert "16 episodes in 2 groups" in capsys.readouterr().out
    data = load_from_disk(str(tmp_path / "sft"))
    assert sorted(data["task_id"]) == TASKS and data["reward"] == [1.0, 1.0]  # each task's best episode
    for row in data:
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["system", "user", "assistant", "tool", "assistant"]
        assert "<tool_call>" in row["messages"][2]["content"] and row["messages"][3]["name"] == "execute_python"
        assert [t["function"]["name"] for t in json.loads(row["tools"])] == ["execute_python"]
    source = {(r["task_id"], r["reward"]): r["messages"] for r in rows_of(run_file)}
    for row in data:
        kept = [{k: v for k, v in m.items() if v is not None} for m in row["messages"]]
        assert kept == [{k: m[k] for k in ("role", "content", "name", "tool_call_id") if k in m}
                        for m in source[(row["task_id"], 1.0)]]  # fmt: skip

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = SFTTrainer(
        model=model,
        args=trl_args(SFTConfig, tmp_path, max_length=4096),
        train_dataset=data,
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
    )
    trainer.train()
    assert trainer.state.global_step == 1
    assert any((a != b).any() for a, b in zip(before, model.parameters(), strict=True))

    passing = export_run(run_file, tmp_path / "passing", format="sft", select="passing")
    assert passing.rows == sum((r["verdict"] or {}).get("passed", False) for r in rows_of(run_file))


def test_dpo_export_trains_with_trl(run_file: Path, tiny_model_dir, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    summary = export_run(run_file, tmp_path / "dpo", format="dpo")
    data = load_from_disk(str(tmp_path / "dpo"))
    assert summary.rows == len(data) >= 1
    for row in data:
        assert row["chosen_reward"] > row["rejected_reward"] and row["task_id"] in TASKS
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
        assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"
        assert row["chosen"] != row["rejected"]

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = DPOTrainer(
        model=model,
        args=trl_args(DPOConfig, tmp_path, max_length=4096, per_device_train_batch_size=1),
        train_dataset=data,
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
    )
    trainer.train()
    [logged, *_] = trainer.state.log_history
    assert logged["logps/chosen"] != logged["logps/rejected"]  # the pair differs within max_length
    assert any((a != b).any() for a, b in zip(before, model.parameters(), strict=True))


def test_infra_errors_and_truncated_episodes_are_not_exported(run_file: Path, tmp_path: Path) -> None:
    rows = rows_of(run_file)
    for row in rows:
        if row["reward"] == 1.0 and row["task_id"] == TASKS[0]:
            row["infra_error"] = "sandbox down"  # its perfect score must not become SFT data
        if row["reward"] == 1.0 and row["task_id"] == TASKS[1]:
            row["truncated"] = True
    summary = export_run(write_rows(tmp_path / "run.jsonl", rows), tmp_path / "sft", format="sft", min_reward=-1)
    data = load_from_disk(str(tmp_path / "sft"))
    assert summary.dropped == sum(r["reward"] == 1.0 for r in rows) and max(data["reward"]) < 1.0


def test_bad_input_is_refused_and_writes_nothing(run_file: Path, tmp_path: Path, capsys) -> None:
    lines = [line for line in run_file.read_text().splitlines() if json.loads(line)["reward"] == 1.0]
    corrupt = tmp_path / "corrupt.jsonl"
    corrupt.write_text("\n".join([lines[0], "{not json", lines[1], '{"task_id": "x"}', lines[2][:40]]))
    with pytest.raises(ValueError, match=r"line 2: .*line 4: no messages, reward; line 5: .*torn last line"):
        export_run(corrupt, tmp_path / "out", format="sft")
    assert not (tmp_path / "out").exists()
    assert main(["export", str(corrupt), "--format", "sft", "--out", str(tmp_path / "out")]) == 2
    assert "--skip-invalid" in capsys.readouterr().err and not (tmp_path / "out").exists()
    summary = export_run(corrupt, tmp_path / "out", format="sft", skip_invalid=True)
    assert summary.invalid_lines == [2, 4, 5] and summary.episodes == 2
    assert read_run(corrupt, skip_invalid=True)[1] == [2, 4, 5]

    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="holds no episode records"):
        export_run(tmp_path / "empty.jsonl", tmp_path / "e", format="sft")
    with pytest.raises(FileNotFoundError):
        export_run(tmp_path / "missing.jsonl", tmp_path / "e", format="sft")
    same = [r for r in rows_of(run_file) if r["task_id"] == TASKS[0]][:1]
    with pytest.raises(ValueError, match="no group has mixed rewards"):
        export_run(write_rows(tmp_path / "same.jsonl", same), tmp_path / "e", format="dpo")
    failing = [dict(r, reward=0.0) for r in rows_of(run_file)]
    with pytest.raises(ValueError, match="no group has an episode with reward above 0"):
        export_run(write_rows(tmp_path / "zero.jsonl", failing), tmp_path / "e", format="sft")
    assert not (tmp_path / "e").exists()


def test_writes_are_atomic(run_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    out = tmp_path / "sft"
    export_run(run_file, out, format="sft")
    first = sorted(p.name for p in out.iterdir())
    with pytest.raises(FileExistsError, match="overwrite"):
        export_run(run_file, out, format="dpo")

    def save_half_then_fail(self, path, **kwargs):
        Path(path).mkdir(parents=True)
        (Path(path) / "data-00000-of-00001.arrow").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", save_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        export_run(run_file, out, format="dpo", overwrite=True)
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == first and "messages" in load_from_disk(str(out)).column_names
    export_run(run_file, out, format="dpo", overwrite=True)
    assert "chosen" in load_from_disk(str(out)).column_names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sft"]  # no staging or backup folder left behind
    shutil.rmtree(out)


def test_tool_schemas_come_from_the_row_else_the_env(run_file: Path, tmp_path: Path) -> None:
    own = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
    rows = [
        dict(r, tools=own) if r["task_id"] == TASKS[0] else dict(r, env_id="nemo/Unknown-v0") for r in rows_of(run_file)
    ]
    summary = export_run(write_rows(tmp_path / "run.jsonl", rows), tmp_path / "sft", format="sft")
    tools = dict(zip(*[load_from_disk(str(tmp_path / "sft"))[c] for c in ("task_id", "tools")], strict=True))
    assert json.loads(tools[TASKS[0]]) == own and json.loads(tools[TASKS[1]]) is None
    assert list(summary.tools_unknown) == ["nemo/Unknown-v0"] and "no tool schemas for" in summary.format_text()
