"""``nemo/Remote-v0`` against real ``gym-nemo serve`` processes on loopback: check_env, vector envs, both
collectors, retries that never double a step, and servers that die or restart mid-episode."""

from __future__ import annotations

import json
import signal
import threading
import time
import warnings
from collections import Counter

import gymnasium as gym
import httpx
import pytest
from gymnasium.utils.env_checker import check_env

import gym_nemo
from gym_nemo.core.errors import InfraError
from gym_nemo.core.spaces import UnicodeText
from gym_nemo.rollout import collect_rollouts
from tests.serving import served, start_server

SLOW_ANSWER = r"\boxed{10^{10^{10^{10^{10}}}}}"


class NoncePolicy:
    """Answers every observation with a message carrying a nonce never used before (to spot duplicates)."""

    name = "nonce"

    def __init__(self) -> None:
        self.sent = 0

    def act(self, observations, infos) -> list[str]:
        out = []
        for _ in observations:
            self.sent += 1
            out.append(f"attempt #{self.sent}: the answer is \\boxed{{{self.sent}}}")
        return out


@pytest.fixture(scope="module")
def math_server():
    with served("nemo/Math-v0") as server:
        yield server


def test_check_env_on_the_remote_env(math_server) -> None:
    env = gym.make("nemo/Remote-v0", url=math_server.url, env_id="nemo/Math-v0")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_env(env.unwrapped, skip_render_check=False)
        assert isinstance(env.observation_space, UnicodeText) and isinstance(env.action_space, UnicodeText)
        assert env.spec is not None and env.spec.max_episode_steps is not None
        local = gym.make("nemo/Math-v0")
        assert env.reset(seed=11)[0] == local.reset(seed=11)[0]  # same task, same prompt as in process
        answer = local.unwrapped.task.reference
        _, reward, terminated, truncated, info = env.step(answer)
        assert (reward, terminated, truncated) == (1.0, True, False) and info["verdict"]["passed"]
        local.close()
    finally:
        env.close()


def test_wrong_env_id_and_unreachable_server_are_clear_errors(math_server) -> None:
    with pytest.raises(ValueError, match="serves 'nemo/Math-v0', not 'nemo/CodeExec-v0'"):
        gym.make("nemo/Remote-v0", url=math_server.url, env_id="nemo/CodeExec-v0")
    tick = time.monotonic()
    with pytest.raises(InfraError, match="failed after"):
        gym.make("nemo/Remote-v0", url="http://127.0.0.1:9", reconnect_s=1.0)  # port 9: nothing listens
    assert time.monotonic() - tick < 5


def test_make_vec_and_collect_rollouts_over_http(math_server, tmp_path) -> None:
    out = tmp_path / "remote.jsonl"
    envs = gym_nemo.make_vec("nemo/Remote-v0", 3, url=math_server.url, env_id="nemo/Math-v0")
    try:
        _, summary = collect_rollouts(envs, NoncePolicy(), 9, env_id="nemo/Remote-v0", out=out, progress=False)
    finally:
        envs.close()
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == summary.episodes == 9 and summary.infra_error_rate == 0
    assert all(line["terminated"] and line["verdict"] and line["expected_answer"] for line in lines)
    assert all(line["versions"]["env"] == "nemo/Math-v0" for line in lines)


def test_a_client_timeout_retries_the_same_request_and_the_step_is_applied_once() -> None:
    with served("nemo/Math-v0", "--env-kwargs", '{"verify_timeout_s": 1.5, "max_attempts": 2}') as server:
        env = gym.make("nemo/Remote-v0", url=server.url, timeout_s=0.5, retries=6, backoff_s=0.2)
        env.reset(seed=0)
        _, _, terminated, truncated, info = env.step(SLOW_ANSWER)  # ~1.5 s on the server: replies time out
        assert "infra_error" not in info and not truncated and not terminated  # a wrong answer, 1 attempt left
        assert [m["role"] for m in info["messages"]].count("assistant") == 1
        assert info["turn"] == 1
        metrics = httpx.get(f"{server.url}/metrics").json()
        assert metrics["counts"]["replayed"] >= 1 and metrics["counts"]["steps"] >= 2
        env.close()


def test_a_server_killed_mid_episode_gives_truncated_with_infra_error_and_a_restart_is_used() -> None:
    server = start_server("nemo/Math-v0")
    try:
        env = gym.make("nemo/Remote-v0", url=server.url, retries=2, backoff_s=0.1, reconnect_s=20)
        env.reset(seed=0)
        server.stop(signal.SIGKILL)
        tick = time.monotonic()
        obs, reward, terminated, truncated, info = env.step("the answer is \\boxed{1}")
        assert time.monotonic() - tick < 5  # bounded, never a hang
        assert truncated and not terminated and reward == 0.0
        assert "could not be reached" in info["infra_error"] and obs.startswith("[infrastructure error]")
        # restarted on the same port: reset opens a new session on the new server
        server = start_server("nemo/Math-v0", port=server.port)
        obs, info = env.reset(seed=0)
        assert obs and info["task_id"]
        # restarted while an episode is open: the session is gone, which is an infra error too
        server.stop(signal.SIGKILL)
        server = start_server("nemo/Math-v0", port=server.port)
        _, reward, terminated, truncated, info = env.step("the answer is \\boxed{1}")
        assert truncated and not terminated and reward == 0.0 and "session is gone" in info["infra_error"]
        env.reset(seed=1)
        assert env.step("\\boxed{2}")[2] is True
        env.close()
    finally:
        server.stop(signal.SIGKILL)


def test_kill_and_restart_during_a_collector_run_loses_and_duplicates_nothing(tmp_path) -> None:
    server = start_server("nemo/Math-v0")
    out = tmp_path / "rollouts.jsonl"
    done = Counter()
    restarted = threading.Event()
    holder = {"server": server}

    def on_record(_) -> None:
        done["records"] += 1
        if done["records"] == 10 and not restarted.is_set():
            restarted.set()
            threading.Thread(target=bounce, daemon=True).start()

    def bounce() -> None:
        holder["server"].stop(signal.SIGKILL)
        time.sleep(1.0)
        holder["server"] = start_server("nemo/Math-v0", port=server.port)

    policy = NoncePolicy()
    envs = gym_nemo.make_vec(
        "nemo/Remote-v0", 4, "sync", url=server.url, env_id="nemo/Math-v0", retries=1, backoff_s=0.1, reconnect_s=30
    )
    try:
        records, summary = collect_rollouts(
            envs, policy, 40, env_id="nemo/Remote-v0", out=out, progress=False, on_record=on_record
        )
    finally:
        envs.close()
        holder["server"].stop(signal.SIGKILL)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == len(records) == 40 and restarted.is_set()
    failed = [line for line in lines if line["infra_error"]]
    assert failed and all(line["truncated"] and not line["terminated"] for line in failed)
    assert len(failed) < 40 and summary.infra_error_rate == len(failed) / 40
    # every assistant message in the file is a distinct action the policy sent: no step applied twice,
    # no episode written twice
    sent = [m["content"] for line in lines for m in line["messages"] if m["role"] == "assistant"]
    assert len(sent) == len(set(sent))
    scored = [line for line in lines if not line["infra_error"]]
    assert all(line["terminated"] and len(line["messages"]) >= 3 for line in scored)


def test_async_token_collector_over_remote_envs(math_server, policy) -> None:
    import copy

    from gym_nemo.policies import SamplingParams
    from gym_nemo.rollout import collect_token_rollouts_async
    from gym_nemo.wrappers import TokenEnv

    def env_fn():
        remote = gym.make("nemo/Remote-v0", url=math_server.url, env_id="nemo/Math-v0")
        return TokenEnv(remote, copy.deepcopy(policy.tokenizer))

    records, metrics = collect_token_rollouts_async(
        env_fn, policy, 4, env_id="nemo/Remote-v0", sampling=SamplingParams(max_tokens=16), max_in_flight=2,
        progress=False,
    )  # fmt: skip
    assert len(records) == 4 and metrics.infra_error_rate == 0
    assert all(r.completion_ids and r.task_row.get("expected_answer") for r in records)
