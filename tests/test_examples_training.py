"""Every training example runs end to end with --smoke (CPU, the tiny model built offline)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
pytest.importorskip("transformers")


def _run(name: str, *args: str, cwd: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--smoke", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("name", ["grpo_custom_loop.py", "ppo_custom_loop.py"])
def test_custom_loops_on_the_toy_env(name: str, tmp_path: Path) -> None:
    logging = ["--log-to", "jsonl,tensorboard"] if name == "grpo_custom_loop.py" else []
    out = _run(name, "--out", str(tmp_path / "run"), *logging, cwd=tmp_path)
    assert len(re.findall(r"^iter +\d+ +reward \d\.\d{3}", out, re.M)) == 2
    assert re.search(r"^seed 0: mean (reward|return) \d\.\d{3} .* -> \d\.\d{3}", out, re.M)
    assert (tmp_path / "run" / "reward_curve.png").stat().st_size > 1000
    if logging:  # the batch metrics reach the loggers, one step per iteration
        logged = [json.loads(line) for line in (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()]
        rewards = [float(r) for r in re.findall(r"^iter +\d+ +reward (\d\.\d{3})", out, re.M)]
        assert [x["step"] for x in logged] == [0, 1]
        assert [round(x["metrics"]["rollout/reward_mean"], 3) for x in logged] == rewards
        assert {"rollout/mixed_group_rate", "rollout/policy_tokens_mean", "train/loss"} <= set(logged[0]["metrics"])
        assert list((tmp_path / "run" / "logs" / "tensorboard" / "seed0").glob("events.out.tfevents.*"))


def test_grpo_custom_loop_on_code_exec(tmp_path: Path) -> None:
    out = _run("grpo_custom_loop.py", "--env", "nemo/CodeExec-v0", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert len(re.findall(r"^iter +\d+ +reward 0\.000 ", out, re.M)) == 2  # random text fails HumanEval


def test_trl_grpo(tmp_path: Path) -> None:
    pytest.importorskip("trl")
    out = _run("trl_grpo.py", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert len(re.findall(r"^step +\d+ +env reward \d\.\d{3} +turns 1\.00 +policy tokens 4\.0", out, re.M)) == 2


def test_openrlhf_agent(tmp_path: Path) -> None:
    from gym_nemo.testing.openrlhf_harness import openrlhf_wheel

    try:
        import openrlhf  # noqa: F401
    except ImportError:
        if openrlhf_wheel() is None:
            pytest.skip("no OpenRLHF wheel (scripts/fetch_openrlhf.sh could not download it)")
    out = _run("openrlhf_agent.py", cwd=tmp_path)
    assert len(re.findall(r"^HumanEval/\d+: reward 0\.00 +turns \d+ +tokens \d+ \(\d+ policy\)", out, re.M)) == 2


def test_verl_agent_loop(tmp_path: Path) -> None:
    out = _run("verl_agent_loop.py", cwd=tmp_path)
    assert len(re.findall(r"^HumanEval/\d+: reward 0\.00 +turns \d+ +done (True|False)", out, re.M)) == 2


def test_grpo_async_trains_while_collecting(tmp_path: Path) -> None:
    out = _run("grpo_async.py", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert len(re.findall(r"^iter +\d+ +reward \d\.\d{3} .* staleness \d+ ", out, re.M)) == 3
    assert re.search(r"^seed 0: mean reward .* s per update\)", out, re.M)
    rows = [json.loads(line) for line in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 2 * 2  # 3 iterations of 2 groups of 2, each group written once
    for row in rows:  # --max-staleness 1: group g (batch g // 2) started at version >= g // 2 - 1
        assert min(row["policy_versions"]) >= row["group"] // 2 - 1


def test_grpo_through_a_langgraph_agent(tmp_path: Path) -> None:
    pytest.importorskip("langgraph")
    out = _run("grpo_agent_workflow.py", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert len(re.findall(r"^iter +\d+ +reward \d\.\d{3} .* infra 0\.00 +breaks 0 ", out, re.M)) == 2
    assert (tmp_path / "run" / "reward_curve.png").stat().st_size > 1000
