"""The collectors, the streaming collector and eval log to any ``MetricsLogger`` (here the JSONL backend, read back)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import gymnasium as gym
import pytest

import gym_nemo
from gym_nemo.policies import ReferencePolicy, SamplingParams
from gym_nemo.rollout import collect_rollouts
from gym_nemo.tracking import JsonlLogger


def logged(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_collect_rollouts_logs_its_batch(tmp_path: Path) -> None:
    envs = gym_nemo.make_vec("nemo/TargetChar-v0", 2, "sync")
    policy = ReferencePolicy(envs.envs[0].unwrapped.tasks)
    with JsonlLogger(tmp_path / "m.jsonl") as logger:
        _, metrics = collect_rollouts(
            envs, policy, 4, env_id="nemo/TargetChar-v0", progress=False, logger=logger, log_step=3
        )
    envs.close()
    [line] = logged(tmp_path / "m.jsonl")
    assert line["step"] == 3 and line["metrics"]["rollout/episodes"] == 4.0
    assert line["metrics"]["rollout/reward_mean"] == pytest.approx(metrics.mean_reward)
    assert line["metrics"]["rollout/wall_s"] == pytest.approx(metrics.duration_s)


def test_eval_logs_every_score(tmp_path: Path) -> None:
    from gym_nemo.eval import PolicyConfig, load_suite, run_suite

    suite = tmp_path / "s.yaml"
    suite.write_text("name: t\nseed: 1\nk: 2\nenvs:\n  - env: nemo/TargetChar-v0\n    tasks: 2\n")
    with JsonlLogger(tmp_path / "m.jsonl") as logger:
        results = run_suite(load_suite(suite), PolicyConfig(), tmp_path / "run", progress=False, logger=logger)
    [line] = logged(tmp_path / "m.jsonl")
    assert line["metrics"]["eval/overall/pass@1"] == results["scores"]["overall"]["pass@1"]
    assert line["metrics"]["eval/overall/mean_reward"] == results["scores"]["overall"]["mean_reward"]
    assert line["metrics"]["eval/TargetChar-v0/episodes"] == 4.0


def test_the_stream_logs_each_training_batch_with_staleness(tiny_model_dir, tmp_path: Path) -> None:
    from gym_nemo.policies import HFPolicy
    from gym_nemo.rollout.stream import stream_token_rollouts
    from gym_nemo.wrappers import TokenEnv

    policy = HFPolicy(tiny_model_dir)
    weights = {k: v.clone() for k, v in policy.model.state_dict().items()}

    def env_fn() -> gym.Env:
        return TokenEnv(gym.make("nemo/TargetChar-v0"), copy.deepcopy(policy.tokenizer))

    with JsonlLogger(tmp_path / "m.jsonl") as logger:
        stream = stream_token_rollouts(
            env_fn,
            policy,
            env_id="nemo/TargetChar-v0",
            group_size=2,
            batch_groups=2,
            num_groups=4,
            sampling=SamplingParams(max_tokens=4, seed=0),
            max_in_flight=4,
            logger=logger,
        )
        with stream:
            for i, _ in enumerate(stream):
                if i == 1:
                    stream.update_weights(weights, 1)
    lines = logged(tmp_path / "m.jsonl")
    assert [line["step"] for line in lines] == [0, 1]
    assert all(line["metrics"]["rollout/episodes"] == 4.0 for line in lines)
    assert lines[0]["metrics"]["rollout/staleness_max"] == 0.0  # batch 0 logged before the update
    assert "rollout/version_switch_rate" in lines[1]["metrics"]
