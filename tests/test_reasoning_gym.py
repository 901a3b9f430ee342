"""nemo/ReasoningGym-v0: any generator, reproducible tasks, its own scorer, stored rows re-score, fuzzing."""

import json
import math
import time

import gymnasium as gym
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gym_nemo  # noqa: F401  (registers the envs)
from gym_nemo.envs.reasoning_gym import dataset_names, generate_rows
from gym_nemo.verifiers.json_codec import from_json, to_json
from gym_nemo.verifiers.reasoning_gym import extract_answer


@pytest.fixture(scope="module")
def env():
    env = gym.make("nemo/ReasoningGym-v0", dataset="leg_counting", size=20, seed=3, max_turns=64)
    yield env
    env.close()


def test_generators_and_reproducible_tasks() -> None:
    names = dataset_names()
    assert len(names) >= 100 and {"leg_counting", "basic_arithmetic", "arc_agi", "sudoku"} <= set(names)
    a = gym.make("nemo/ReasoningGym-v0", dataset="leg_counting", size=5, seed=11, min_animals=4, max_animals=4)
    b = gym.make("nemo/ReasoningGym-v0", dataset="leg_counting", size=5, seed=11, min_animals=4, max_animals=4)
    c = gym.make("nemo/ReasoningGym-v0", dataset="leg_counting", size=5, seed=12, min_animals=4, max_animals=4)
    assert [t.row for t in a.unwrapped.tasks] == [t.row for t in b.unwrapped.tasks]
    assert [t.row for t in a.unwrapped.tasks] != [t.row for t in c.unwrapped.tasks]
    assert a.unwrapped.tasks[0].row["verifier_metadata"]["config"] == {
        "size": 5,
        "seed": 11,
        "min_animals": 4,
        "max_animals": 4,
    }
    assert a.unwrapped.config == {"min_animals": 4, "max_animals": 4}
    for env in (a, b, c):
        env.close()
    with pytest.raises(ValueError, match="unknown reasoning-gym dataset"):
        gym.make("nemo/ReasoningGym-v0", dataset="no_such_generator")


def test_known_correct_wrong_and_malformed_answers(env) -> None:
    task = env.unwrapped.tasks[0]
    answer = task.row["answer"]
    env.reset(options={"task_index": 0})
    _, r, terminated, _, info = env.step(f"Counting legs...\n<answer>{answer}</answer>")
    assert (r, terminated) == (1.0, True) and info["verdict"]["details"]["extraction"] == "answer_tag"
    env.reset(options={"task_index": 0})
    obs, r, *_ = env.step(f"<answer>{int(answer) + 1}</answer>")
    assert r == 0.0 and "scored 0" in obs
    env.reset(options={"task_index": 0})
    obs, r, *_ = env.step("I could not count them.")
    assert r == 0.0 and "no <answer>...</answer> block" in obs


def test_max_attempts_feedback_then_success() -> None:
    env = gym.make("nemo/ReasoningGym-v0", dataset="basic_arithmetic", size=3, seed=0, max_attempts=2)
    try:
        env.reset(options={"task_index": 1})
        obs, r, terminated, *_ = env.step("<answer>not a number</answer>")
        assert (r, terminated) == (0.0, False) and "1 attempt(s) left" in obs
        _, r, terminated, *_ = env.step(env.unwrapped.task.reference)
        assert (r, terminated) == (1.0, True)
    finally:
        env.close()


@pytest.mark.parametrize("dataset", ["arc_agi", "sudoku", "knights_knaves", "polynomial_equations", "rubiks_cube"])
def test_stored_rows_rescore_without_regenerating(dataset: str) -> None:
    """A row written to JSONL and read back scores like the live entry; arc_agi's scorer compares tuples,
    which plain JSON would turn into lists (scoring 0.05 instead of 1.0)."""
    env = gym.make("nemo/ReasoningGym-v0", dataset=dataset, size=2, seed=5)
    try:
        for task in env.unwrapped.tasks:
            stored = json.loads(json.dumps(task.row))
            revived = env.unwrapped.row_to_task(stored, 0)
            assert revived.hidden == task.hidden
            if task.reference is not None:
                assert env.unwrapped.verify(revived, task.reference).reward == 1.0
            else:  # many valid answers: scored from the metadata
                assert env.unwrapped.verify(revived, "<answer>nonsense</answer>").reward < 1.0
    finally:
        env.close()


def test_options_task_round_trip(env) -> None:
    row = json.loads(json.dumps(generate_rows("basic_arithmetic", 4, 9)[2]))
    obs, info = env.reset(options={"task": row})  # a row from another generator in this env
    assert info["task_id"] == "rg/basic_arithmetic/9/2" and row["question"] in obs
    _, r, *_ = env.step(f"<answer>{row['answer']}</answer>")
    assert r == 1.0
    with pytest.raises(ValueError, match="metadata"):
        env.reset(options={"task": {"responses_create_params": {"input": "x"}}})


def test_type_preserving_rows() -> None:
    value = {"grid": ((1, 2), (3, 4)), "seen": {1, 2}, 3: "int key", "plain": [1, "a", None]}
    encoded = to_json(value)
    assert json.loads(json.dumps(encoded)) == encoded
    assert from_json(encoded) == value
    assert to_json({"a": [1, 2]}) == {"a": [1, 2]}  # plain JSON data is stored unchanged


def test_answer_extraction_follows_nemo_gym() -> None:
    assert extract_answer("x <answer> 1 </answer> y <answer>2</answer>") == ("2", "answer_tag")
    assert extract_answer("<answer>a<answer>b</answer>") == ("a<answer>b", "answer_tag")  # as its regex reads it
    assert extract_answer("\\boxed{} \\boxed{7} then \\boxed{8}") == ("7", "boxed")
    assert extract_answer("  just 9 ") == ("just 9", "whole_message")
    for text in ("<answer>" * 25_000, "\\boxed{" * 28_000, "\\boxed{" + "x" * 200_000):  # linear time
        start = time.monotonic()
        extract_answer(text)
        assert time.monotonic() - start < 0.5


def test_a_hanging_scorer_is_bounded() -> None:
    """intermediate_integration's scorer differentiates the answer with SymPy; a huge power must not hang."""
    env = gym.make("nemo/ReasoningGym-v0", dataset="intermediate_integration", size=1, seed=0, verify_timeout_s=2)
    try:
        env.reset(options={"task_index": 0})
        start = time.monotonic()
        obs, r, terminated, truncated, info = env.step("<answer>exp(x)**(10**8)</answer>")
        assert time.monotonic() - start < 10
        assert (r, terminated, truncated) == (0.0, True, False) and "infra_error" not in info
        assert info["verdict"]["details"]["timed_out"] and "took too long" in obs
        env.reset(options={"task_index": 0})  # the worker was replaced: scoring still works
        _, r, *_ = env.step(env.unwrapped.task.reference)
        assert r == 1.0
    finally:
        env.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.text(max_size=200),
        st.builds(lambda s: f"<answer>{s}</answer>", st.text(max_size=40)),
        st.builds(lambda s: f"\\boxed{{{s}}}", st.text(max_size=40)),
    )
)
def test_fuzzed_answers_never_crash(env, action: str) -> None:
    env.reset(options={"task_index": 0})
    obs, reward, terminated, truncated, info = env.step(action)
    assert isinstance(obs, str) and math.isfinite(reward) and 0.0 <= reward <= 1.0
    assert "infra_error" not in info and not truncated
    assert terminated or obs.startswith("[error]")
