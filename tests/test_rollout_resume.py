"""Resume for the text-level collector (`collect_rollouts`, `gym-nemo rollout --policy reference --resume`)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import gym_nemo
from gym_nemo.policies import ReferencePolicy
from gym_nemo.rollout import collect_rollouts

ENV = "nemo/CodeExec-v0"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _run(out: Path, num_episodes: int, **kwargs):
    envs = gym_nemo.make_vec(ENV, 2, "sync", timeout_s=5)
    policy = ReferencePolicy(envs.get_attr("tasks")[0], corrupt_rate=0.5, seed=0)
    try:
        return collect_rollouts(envs, policy, num_episodes, env_id=ENV, seed=0, out=out, progress=False, **kwargs)
    finally:
        envs.close()


def test_resume_cuts_a_torn_line_and_plays_only_the_missing_episodes(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    first, _ = _run(out, 6)
    written = out.read_bytes()
    out.write_bytes(written + b'{"responses_create_params": {"inp')  # killed mid-write
    new, summary = _run(out, 10, resume=True)
    rows = _rows(out)
    assert len(new) == summary.episodes == 4 and len(rows) == 10
    assert out.read_bytes().startswith(written)  # what was whole survives unchanged
    # the resumed run draws a fresh task sequence instead of replaying the first run's episodes
    assert [r.task_id for r in new] != [r.task_id for r in first[:4]]
    assert _run(out, 10, resume=True)[0] == [] and len(_rows(out)) == 10


def test_kill_9_then_resume_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    out = tmp_path / "killed.jsonl"
    args = [sys.executable, "-m", "gym_nemo.cli", "rollout", ENV, "--num-envs", "1", "--num-episodes", "400"]
    args += ["--vectorization", "sync", "--seed", "3", "--out", str(out), "--quiet", "--env-kwargs", '{"timeout_s": 5}']
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 20):
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    killed = out.read_bytes()
    assert 20 <= killed.count(b"\n") < 400
    done = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = _rows(out)
    whole = killed[: killed.rfind(b"\n") + 1].decode("utf-8").splitlines()
    assert len(rows) == 400 and [json.loads(line) for line in whole] == rows[: len(whole)]
    resumed = [r["task_id"] for r in rows[len(whole) :]]
    assert resumed != [r["task_id"] for r in rows[: len(resumed)]]  # not a replay of the killed run
