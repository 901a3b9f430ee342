"""`gym-nemo rollout`: the main job writes whole, re-scorable NeMo Gym-compatible records."""

import json
import subprocess
import sys
from pathlib import Path

from gym_nemo.cli import main
from gym_nemo.envs.code_exec import CodeExecEnv

RECORD_KEYS = {
    "responses_create_params",
    "verifier_metadata",
    "env_id",
    "task_id",
    "messages",
    "reward",
    "step_rewards",
    "reward_components",
    "verdict",
    "terminated",
    "truncated",
    "infra_error",
    "num_turns",
    "duration_s",
    "policy",
    "seed",
    "versions",
}


def test_rollout_command_writes_records_and_prints_a_summary(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "r.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "gym_nemo.cli",
        "rollout",
        "nemo/CodeExec-v0",
        "--num-episodes",
        "12",
        "--num-envs",
        "3",
        "--corrupt-rate",
        "0.5",
        "--seed",
        "1",
        "--out",
        str(out),
        "--quiet",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    for label in ("mean reward", "episodes/s", "mean turns", "truncation rate", "infra-error rate"):
        assert label in proc.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12
    assert all(set(row) >= RECORD_KEYS for row in rows)
    rewards = {row["reward"] for row in rows}
    assert rewards == {0.0, 1.0}  # mixed by the corruption
    for row in rows:
        assert row["num_turns"] == 2 and [m["role"] for m in row["messages"]][-3:] == ["assistant", "tool", "assistant"]
        assert row["reward"] == sum(row["step_rewards"]) and row["versions"]["env"] == "nemo/CodeExec-v0"
        assert row["infra_error"] is None and row["policy"] == "reference"


def test_stored_records_rescore_to_the_same_reward(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    assert (
        main(
            [
                "rollout",
                "nemo/CodeExec-v0",
                "--num-episodes",
                "10",
                "--num-envs",
                "2",
                "--vectorization",
                "sync",
                "--corrupt-rate",
                "0.5",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    env = CodeExecEnv()
    for line in out.read_text().splitlines():
        row = json.loads(line)
        task = env.row_to_task(row, 0)
        final_answer = row["messages"][-1]["content"]
        assert env.verify(task, final_answer).reward == row["reward"]
    env.close()


def test_list_and_bad_arguments(capsys) -> None:
    assert main(["list"]) == 0
    assert "nemo/CodeExec-v0" in capsys.readouterr().out
    assert main(["rollout", "nemo/Nope-v0"]) == 2
    assert main(["rollout", "nemo/CodeExec-v0", "--env-kwargs", "{bad"]) == 2
    assert main(["rollout", "nemo/CodeExec-v0", "--policy", "gpt"]) == 2
    assert "unknown policy" in capsys.readouterr().err
