"""nemo/GymText-v0 and the toy-text ids: actions, per-step rewards, seeds and replay, hostile input, rollouts."""

from __future__ import annotations

import math
from functools import partial
from typing import ClassVar

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gym_nemo
from gym_nemo.policies import ReferencePolicy
from gym_nemo.rollout import collect_rollouts
from gym_nemo.rollout.engine import replay


def play(env: gym.Env, actions: list[str]) -> tuple[list[float], bool, bool, dict]:
    rewards, terminated, truncated, info = [], False, False, {}
    for action in actions:
        _, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        if terminated or truncated:
            break
    return rewards, terminated, truncated, info


@pytest.mark.parametrize(
    ("env_id", "kwargs", "expected"),
    [
        ("nemo/FrozenLake-v0", {"is_slippery": False}, 1.0),  # the shortest safe path: 6 moves to the goal
        ("nemo/CliffWalking-v0", {}, -13.0),  # up, 11 x right, down
    ],
)
def test_reference_scripts_play_the_optimal_return(env_id: str, kwargs: dict, expected: float) -> None:
    env = gym.make(env_id, num_tasks=5, **kwargs)
    for index in range(5):
        env.reset(options={"task_index": index})
        rewards, terminated, _, info = play(env, list(env.unwrapped.task.reference))
        assert terminated and sum(rewards) == expected
        assert info["verdict"]["passed"] is True and info["verdict"]["reward"] == expected
    env.close()


def test_taxi_rewards_pass_through_negative_and_above_one() -> None:
    env = gym.make("nemo/Taxi-v0", num_tasks=3)
    assert env.unwrapped.reward_range == (-10.0, 20.0)
    env.reset(options={"task_index": 0})
    rewards, terminated, _, info = play(env, list(env.unwrapped.task.reference))
    assert terminated and rewards[-1] == 20.0 and all(r == -1.0 for r in rewards[:-1])
    assert info["reward_components"] == {"world": 20.0} and info["episode_return"] == sum(rewards)
    env.reset(options={"task_index": 0})
    _, reward, *_ = env.step("<action>dropoff</action>")  # dropping off where there is no passenger
    assert reward == -10.0
    env.close()


def test_action_formats_and_what_is_not_an_action() -> None:
    env = gym.make("nemo/FrozenLake-v0", is_slippery=False, reward_mode="dense")
    obs, _ = env.reset(seed=0)
    assert "Legal actions: left (0), down (1), right (2), up (3)" in obs and "You are at row 0, column 0" in obs
    for action, row_col in [
        ("<action>down</action>", "row 1, column 0"),
        ("I think <action>RIGHT</action> is bad; <action>up</action>", "row 0, column 0"),  # the last tag counts
        (" 2 ", "row 0, column 1"),
        ("left", "row 0, column 0"),
    ]:
        obs, reward, *_ = env.step(action)
        assert row_col in obs and reward == 0.0, (action, obs)
    for bad in ["go down please", "<action>jump</action>", "7", "<action>-1</action>", ""]:
        obs, reward, terminated, truncated, info = env.step(bad)
        assert obs.startswith("[error]") and reward == pytest.approx(-0.1), (bad, obs)
        assert info["reward_components"] == {"format": -0.1} and not (terminated or truncated)
    assert "is not a legal action. Legal actions: left (0)" in env.step("<action>jump</action>")[0]
    assert "row 0, column 0" in env.unwrapped.describe()  # unplayed messages do not move the world
    assert env.unwrapped.reward_range == pytest.approx((-0.1, 1.0))
    sparse = gym.make("nemo/FrozenLake-v0")
    sparse.reset(seed=0)
    assert sparse.step("jump")[1] == 0.0
    env.close()
    sparse.close()


def test_seeds_pick_tasks_and_worlds_replay_exactly_from_records() -> None:
    env = gym.make("nemo/FrozenLake-v0")  # slippery: the world's own RNG decides where a move goes
    assert env.reset(seed=3) == env.reset(seed=3)
    rng = np.random.default_rng(0)
    actions = [f"<action>{int(a)}</action>" for a in rng.integers(0, 4, size=40)]
    env.reset(seed=7)
    rewards, _, _, last = play(env, actions)
    row = {**last["task_row"], "messages": last["messages"], "seed": 7}
    other = gym.make("nemo/FrozenLake-v0")
    assert replay(other, row).step_rewards == rewards
    assert other.unwrapped.messages == last["messages"]  # the same slips, the same transcript
    env.close()
    other.close()


def test_blackjack_describes_its_tuple_state() -> None:
    env = gym.make("nemo/Blackjack-v0")
    obs, _ = env.reset(seed=0)
    assert "Your hand sums to" in obs and "The dealer shows" in obs and "stick (0), hit (1)" in obs
    _, reward, terminated, *_ = env.step("stick")
    assert terminated and reward in (-1.0, 0.0, 1.0)
    env.close()


class _Grid(gym.Env):
    """A MultiDiscrete world written here: move (dx, dy) in {0,1,2}^2 - 1 on a 3x3 grid; reward 1 at (2, 2)."""

    metadata: ClassVar[dict] = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None, broken: bool = False) -> None:
        self.render_mode, self.broken = render_mode, broken
        self.action_space = spaces.MultiDiscrete([3, 3])
        self.observation_space = spaces.MultiDiscrete([3, 3])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = np.array([0, 0])
        return self.pos.copy(), {}

    def step(self, action):
        if self.broken:
            raise RuntimeError("physics engine crashed")
        self.pos = np.clip(self.pos + np.asarray(action) - 1, 0, 2)
        done = bool((self.pos == 2).all())
        return self.pos.copy(), float(done), done, False, {"pos": self.pos}

    def render(self):
        return "\n".join(
            "".join("\x1b[41m@\x1b[0m" if [x, y] == self.pos.tolist() else "." for x in range(3)) for y in range(3)
        )


gym.register("GymTextTestGrid-v0", entry_point=_Grid, max_episode_steps=20)


def test_any_gymnasium_env_multidiscrete_with_its_ansi_render() -> None:
    env = gym.make("nemo/GymText-v0", env_id="GymTextTestGrid-v0", num_tasks=2)
    obs, _ = env.reset(seed=0)
    assert "@.." in obs and "\x1b" not in obs and "one index per dimension" in obs
    _, reward, terminated, _, info = env.step("<action>2 2</action>")
    assert reward == 0.0 and info["world_action"] == "2 2" and info["world_info"] == {"pos": [1, 1]}
    _, reward, terminated, _, info = env.step("2, 2")
    assert reward == 1.0 and terminated and info["verdict"]["passed"]
    assert env.unwrapped.reward_range == (-math.inf, math.inf)
    env.close()


def test_a_world_that_crashes_is_an_infra_error_not_a_score() -> None:
    env = gym.make("nemo/GymText-v0", env_id="GymTextTestGrid-v0", broken=True, num_tasks=1)
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step("1 1")
    assert truncated and not terminated and reward == 0.0
    assert "physics engine crashed" in info["infra_error"] and "verdict" not in info
    env.close()


def test_worlds_it_cannot_wrap_fail_with_the_fix() -> None:
    with pytest.raises(ValueError, match="pass describer"):
        gym.make("nemo/GymText-v0", env_id="MountainCar-v0")
    with pytest.raises(ValueError, match="Discrete/MultiDiscrete only"):
        gym.make("nemo/GymText-v0", env_id="Pendulum-v1", describer=lambda world, obs: str(obs))
    with pytest.raises(ValueError, match="4 actions; got 2"):
        gym.make("nemo/FrozenLake-v0", action_names=["a", "b"])
    with pytest.raises(TypeError, match="max_attempts"):
        gym.make("nemo/FrozenLake-v0", max_attempts=2)
    env = gym.make("nemo/GymText-v0", env_id="CartPole-v1", describer=lambda world, obs: f"pole angle {obs[2]:+.3f}")
    obs, _ = env.reset(seed=0)
    assert "pole angle" in obs and env.step("1")[1] == 1.0
    env.close()


@pytest.fixture(scope="module")
def dense_lake():
    env = gym.make("nemo/FrozenLake-v0", reward_mode="dense", max_turns=1000, max_episode_steps=1000)
    yield env
    env.close()


actions = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=60),  # includes surrogates
    st.builds(lambda s: f"<action>{s}</action>", st.text(max_size=30)),
    st.sampled_from(["<action>", "</action>", "<action></action>", "9" * 40, "-0", "\x00", "down\x00", "x" * 300_000]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions)
def test_fuzzed_actions_never_crash(dense_lake, action: str) -> None:
    if dense_lake.unwrapped.task is None or dense_lake.unwrapped._done:
        dense_lake.reset(seed=0)
    obs, reward, _, _, info = dense_lake.step(action)
    assert isinstance(obs, str) and dense_lake.observation_space.contains(obs)
    obs.encode("utf-8")
    lo, hi = dense_lake.unwrapped.reward_range
    assert isinstance(reward, float) and lo <= reward <= hi
    assert "infra_error" not in info


@pytest.mark.parametrize("action", [None, 3, b"\xff down", ["left"]])
def test_non_string_actions(dense_lake, action) -> None:
    dense_lake.reset(seed=0)
    obs, *_ = dense_lake.step(action)
    assert obs.startswith("[note]") or obs.startswith("[error]")


def test_text_collector_with_the_reference_policy_and_vector_env() -> None:
    envs = gym_nemo.make_vec("nemo/CliffWalking-v0", 2, "sync", num_tasks=4)
    policy = ReferencePolicy(envs.envs[0].unwrapped.tasks)
    records, summary = collect_rollouts(envs, policy, 4, env_id="nemo/CliffWalking-v0", progress=False)
    envs.close()
    assert len(records) == 4 and all(r.reward == -13.0 and r.step_rewards == [-1.0] * 13 for r in records)
    assert summary.pass_rate == 1.0
    env = gym.make("nemo/CliffWalking-v0", num_tasks=4)
    for record in records:
        assert replay(env, record.to_row()).step_rewards == record.step_rewards
    env.close()


def test_token_env_and_token_collector_with_the_tiny_model(policy) -> None:
    from gym_nemo.policies import SamplingParams
    from gym_nemo.rollout import collect_token_rollouts
    from gym_nemo.wrappers import TokenEnv

    envs = gym_nemo.make_vec(
        "nemo/FrozenLake-v0",
        2,
        "sync",
        wrappers=[partial(TokenEnv, tokenizer=policy.tokenizer)],
        reward_mode="dense",
        max_turns=3,
    )
    records, _ = collect_token_rollouts(
        envs, policy, 2, env_id="nemo/FrozenLake-v0", sampling=SamplingParams(max_tokens=4, seed=0), progress=False
    )
    envs.close()
    for record in records:
        assert len(record.step_rewards) == record.num_turns and record.truncated  # random text: 3 unplayed turns
        assert record.step_rewards == [pytest.approx(-0.1)] * 3
        assert sum(record.completion_mask) > 0 and len(record.completion_ids) == len(record.completion_mask)
        text = policy.tokenizer.decode(record.prompt_ids + record.completion_ids)
        assert "is not a legal action" in text  # the env's notes are in the token stream the trainer scores


def test_async_token_collector_on_a_world(policy) -> None:
    from gym_nemo.policies import SamplingParams
    from gym_nemo.rollout import collect_token_rollouts_async
    from gym_nemo.wrappers import TokenEnv

    def env_fn():
        return TokenEnv(gym.make("nemo/Blackjack-v0", reward_mode="dense", max_turns=2), policy.tokenizer)

    records, _ = collect_token_rollouts_async(
        env_fn,
        policy,
        4,
        env_id="nemo/Blackjack-v0",
        group_size=2,
        sampling=SamplingParams(max_tokens=4, seed=0),
        max_in_flight=2,
        progress=False,
    )
    assert len(records) == 4 and {r.group for r in records} == {0, 1}
    for record in records:  # random text is not a move: two notes, the hand is never played
        assert record.step_rewards == [pytest.approx(-0.1)] * 2 and record.truncated
        assert record.task_row["verifier_metadata"]["world"] == "Blackjack-v1"


def test_ppo_example_runs_on_a_world(tmp_path) -> None:
    """examples/ppo_custom_loop.py on nemo/FrozenLake-v0 (--smoke): per-step rewards of a world reach its loss."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "ppo_custom_loop.py"
    kwargs = '{"is_slippery": false, "reward_mode": "dense", "max_turns": 2}'
    proc = subprocess.run(
        [
            sys.executable,
            str(example),
            "--smoke",
            "--env",
            "nemo/FrozenLake-v0",
            "--env-kwargs",
            kwargs,
            "--out",
            "run",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(re.findall(r"^iter +\d+ +reward -0\.\d{3} +turns 2\.00", proc.stdout, re.M)) == 2
    assert (tmp_path / "run" / "reward_curve.png").stat().st_size > 1000
