"""nemo/ToolUse-v0: tau2 airline/retail tools on a per-episode database, scored against the gold replay."""

import json
import math

import gymnasium as gym
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gym_nemo.envs.tool_use import ToolUseEnv, domain_tasks
from gym_nemo.policies.reference import ReferencePolicy


def call(name: str, **arguments) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


@pytest.fixture(scope="module")
def airline():
    env = gym.make("nemo/ToolUse-v0")
    yield env
    env.close()


def writes(task) -> list:
    return [
        a for a in task.hidden["task"].evaluation_criteria.actions or [] if not a.name.startswith(("get_", "search"))
    ]


def play(env, policy, task_id: str) -> tuple[float, dict]:
    obs, info = env.reset(options={"task_id": task_id})
    total = 0.0
    while True:
        obs, reward, terminated, truncated, info = env.step(policy.act([obs], [info])[0])
        total += reward
        if terminated or truncated:
            return total, info


@pytest.mark.parametrize("domain", ["airline", "retail"])
def test_gold_replay_scores_one_and_doing_nothing_scores_zero(domain: str) -> None:
    env = gym.make("nemo/ToolUse-v0", domain=domain)
    try:
        tasks = env.unwrapped.tasks
        assert len(tasks) == {"airline": 50, "retail": 114}[domain]
        policy = ReferencePolicy(tasks)
        with_writes = [t for t in tasks if writes(t)][:4]
        for task in [tasks[0], *with_writes]:
            reward, info = play(env, policy, task.task_id)
            assert reward == 1.0 and info["verdict"]["details"]["db_match"], task.task_id
        for task in with_writes[:2]:
            env.reset(options={"task_id": task.task_id})
            _, reward, terminated, _, info = env.step("Sorry, I cannot help with that.")
            assert terminated and reward == 0.0 and not info["verdict"]["details"]["db_match"]
    finally:
        env.close()


def test_tools_are_tau2s_own_with_openai_schemas(airline) -> None:
    _, info = airline.reset(seed=0)
    names = {t["function"]["name"] for t in info["tools"]}
    assert {"book_reservation", "cancel_reservation", "get_user_details", "transfer_to_human_agents"} <= names
    assert all(t["type"] == "function" and "parameters" in t["function"] for t in info["tools"])
    assert "# Policy" in info["messages"][0]["content"] and info["messages"][1]["role"] == "user"


def test_wrong_write_scores_zero_and_the_next_episode_starts_from_a_clean_database(airline) -> None:
    task = next(t for t in airline.unwrapped.tasks if any(a.name == "cancel_reservation" for a in writes(t)))
    gold = next(a for a in writes(task) if a.name == "cancel_reservation")
    other = next(  # someone else's reservation: cancelling it changes the database the wrong way
        t for t in airline.unwrapped.tasks for a in writes(t) if a.name == "cancel_reservation" and a != gold
    )
    other_id = next(a for a in writes(other) if a.name == "cancel_reservation").arguments["reservation_id"]
    airline.reset(options={"task_id": task.task_id})
    obs, reward, *_ = airline.step(call("cancel_reservation", reservation_id=other_id))
    assert reward == 0.0 and other_id in obs
    _, reward, terminated, _, info = airline.step("Done.")
    assert terminated and reward == 0.0 and not info["verdict"]["details"]["db_match"]
    reward, _ = play(airline, ReferencePolicy(airline.unwrapped.tasks), task.task_id)
    assert reward == 1.0  # the cancellation above did not leak into this episode


def test_malformed_calls_and_tool_errors_get_feedback(airline) -> None:
    airline.reset(seed=1)
    obs, _, terminated, truncated, info = airline.step(call("get_user_details", user_id="nobody_0000"))
    assert "Error" in obs and not (terminated or truncated) and "infra_error" not in info
    obs, *_ = airline.step(call("get_user_details"))
    assert "'user_id' is a required property" in obs
    obs, *_ = airline.step(call("drop_database"))
    assert "unknown tool 'drop_database'" in obs
    obs, *_ = airline.step('<tool_call>{"name": "get_user_details", "arguments": {"user_id": </tool_call>')
    assert "not valid JSON" in obs


def test_row_round_trip_with_a_full_tau2_task_and_domain_checks(airline) -> None:
    tau2_task = domain_tasks("airline")["5"]
    row = dict(ToolUseEnv.domain_rows("airline")[0])
    row["verifier_metadata"] = {"domain": "airline", "task": json.loads(tau2_task.model_dump_json())}
    _, info = airline.reset(options={"task": row})
    assert info["task_id"] == "airline/5"
    for message in airline.unwrapped.task.reference:
        *_, info = airline.step(message)
    assert info["verdict"]["reward"] == 1.0 and info["task_row"] == row
    with pytest.raises(ValueError, match="domain"):
        airline.reset(options={"task": {**row, "verifier_metadata": {"domain": "retail", "task_id": "0"}}})
    for bad in [{}, {"domain": "telecom"}, {"domain": "airline", "task_id": "nope"}, {"domain": "airline", "task": {}}]:
        with pytest.raises(ValueError):
            ToolUseEnv.row_to_task({**row, "verifier_metadata": bad}, 0)
    with pytest.raises(ValueError):
        ToolUseEnv(domain="telecom")
    with pytest.raises(ValueError, match="the data has"):
        ToolUseEnv(data=ToolUseEnv.domain_rows("retail")[:2])


names = st.sampled_from(["get_user_details", "cancel_reservation", "search_direct_flight", "nope", ""])
args = st.dictionaries(
    st.sampled_from(["user_id", "reservation_id", "origin", "date", "x"]),
    st.one_of(st.text(max_size=12), st.integers(), st.none()),
    max_size=3,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.builds(lambda n, a: call(n, **a), names, args), st.text(max_size=100)))
def test_fuzzed_actions_never_crash(airline, action: str) -> None:
    if airline.unwrapped.task is None or airline.unwrapped._done:
        airline.reset(seed=0)
    obs, reward, terminated, truncated, info = airline.step(action)
    assert isinstance(obs, str) and math.isfinite(reward) and "infra_error" not in info
    if terminated or truncated:
        airline.reset(seed=0)
