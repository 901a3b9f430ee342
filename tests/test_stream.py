"""The streaming collector: whole groups while generation goes on, versions per turn, staleness held back (never
dropped), weight updates between generate calls, resume without losing or repeating a group."""

from __future__ import annotations

import copy
import json
import threading
from collections import Counter

import gymnasium as gym
import pytest

pytest.importorskip("torch")

import gym_nemo  # noqa: F401
from gym_nemo.policies import HFPolicy, SamplingParams
from gym_nemo.rollout.stream import staleness, stream_token_rollouts
from gym_nemo.wrappers import TokenEnv


def env_fn_for(tokenizer):
    def env_fn() -> gym.Env:
        return TokenEnv(gym.make("nemo/TargetChar-v0", max_attempts=2), copy.deepcopy(tokenizer))

    return env_fn


def stream_of(policy: HFPolicy, **kwargs):
    settings = {
        "env_id": "nemo/TargetChar-v0",
        "group_size": 2,
        "batch_groups": 2,
        "sampling": SamplingParams(max_tokens=6, seed=0),
        "max_in_flight": 4,
    }
    return stream_token_rollouts(env_fn_for(policy.tokenizer), policy, **{**settings, **kwargs})


def test_whole_groups_with_versions_per_turn_and_bounded_start(tiny_model_dir, tmp_path) -> None:
    policy = HFPolicy(tiny_model_dir)
    weights = {k: v.clone() for k, v in policy.model.state_dict().items()}
    delivered = []
    with stream_of(policy, max_staleness=1, num_groups=8, out=tmp_path / "s.jsonl") as stream:
        for group in stream:
            assert len(group) == 2 and len({r.group for r in group}) == 1 and len({r.task_id for r in group}) == 1
            for r in group:
                assert r.policy_versions is not None and len(r.policy_versions) == len(r.finish_reasons)
                assert r.policy_versions == sorted(r.policy_versions)  # a version never goes back within an episode
            # group k belongs to batch k // 2; it may start at most max_staleness=1 version early
            assert min(v for r in group for v in r.policy_versions) >= group[0].group // 2 - 1
            assert staleness(group, stream.version) <= 2
            delivered.append(group)
            if len(delivered) % 2 == 0:
                stream.update_weights(weights, stream.version + 1)
    assert sorted(g[0].group for g in delivered) == list(range(8))
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert Counter(r["group"] for r in rows) == {g: 2 for g in range(8)}
    assert policy.version == 4


def test_staleness_zero_holds_new_groups_back_until_the_update(tiny_model_dir) -> None:
    policy = HFPolicy(tiny_model_dir)
    weights = {k: v.clone() for k, v in policy.model.state_dict().items()}
    with stream_of(policy, max_staleness=0, num_groups=4) as stream:
        first = [next(stream), next(stream)]  # batch 0: groups 0 and 1
        assert sorted(g[0].group for g in first) == [0, 1]
        got: list = []
        waiter = threading.Thread(target=lambda: got.append(next(stream)), daemon=True)
        waiter.start()
        waiter.join(timeout=3)
        assert waiter.is_alive() and not got  # batch 1 may not start before version 1
        stream.update_weights(weights, 1)
        waiter.join(timeout=120)
        assert got and got[0][0].group in (2, 3)
        assert all(v == 1 for r in got[0] for v in r.policy_versions)


def test_resume_after_a_stop_loses_and_repeats_no_group(tiny_model_dir, tmp_path) -> None:
    policy = HFPolicy(tiny_model_dir)
    out = tmp_path / "s.jsonl"
    # no weight updates here: a staleness bound this loose never holds a group back
    with stream_of(policy, num_groups=6, out=out, max_staleness=10) as stream:
        early = [next(stream) for _ in range(3)]
    lines = out.read_text().splitlines()
    assert len(lines) == 6
    # a kill while the third group was being written: its second line torn, half of it on disk
    out.write_text("\n".join(lines[:5]) + "\n" + lines[5][:40])
    cut_group = json.loads(lines[4])["group"]
    with stream_of(policy, num_groups=6, out=out, resume=True, max_staleness=10) as stream:
        late = list(stream)
    assert cut_group in [g[0].group for g in late]  # delivered again, whole (its kept member + a new one)
    delivered = {g[0].group for g in early[:2]} | {g[0].group for g in late}
    assert delivered == set(range(6)) and len(early[:2]) + len(late) == 6
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert Counter(r["group"] for r in rows) == {g: 2 for g in range(6)}


def test_bad_arguments_fail_before_anything_starts(tiny_model_dir) -> None:
    policy = HFPolicy(tiny_model_dir)
    with pytest.raises(ValueError, match="max_staleness"):
        stream_of(policy, max_staleness=-1)
    with stream_of(policy, num_groups=0) as stream:
        assert list(stream) == []
        with pytest.raises(ValueError):
            stream.update_weights({}, 1)  # missing every key: refused, nothing changed
        assert policy.version == 0
