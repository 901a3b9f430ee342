"""nemo/CompCoding-v0: stdin/stdout problems judged LiveCodeBench-style in the sandbox."""

import base64
import json
import math
import zlib

import gymnasium as gym
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gym_nemo.envs.comp_coding import CompCodingEnv
from gym_nemo.verifiers.stdio_tests import UnitTests, outputs_match, parse_unit_tests, verify_stdio_tests

ADD_ROW = {
    "responses_create_params": {"input": [{"role": "user", "content": "Read two integers, print their sum."}]},
    "verifier_metadata": {"unit_tests": {"inputs": ["1 2\n", "5 7\n", "-3 3\n"], "outputs": ["3\n", "12\n", "0\n"]}},
    "hash_id": "add",
}
ADD = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"


def program(code: str) -> str:
    return f"Here it is:\n```python\n{code}\n```"


@pytest.fixture(scope="module")
def env():
    env = CompCodingEnv(timeout_s=2, total_timeout_s=20)
    yield env
    env.close()


def test_bundled_references_pass_every_hidden_test(env) -> None:
    with_reference = [t for t in env.tasks if t.reference]
    assert len(env.tasks) == 5 and len(with_reference) == 4
    for task in with_reference:
        verdict = env.verify(task, task.reference)
        assert verdict.reward == 1.0, (task.task_id, verdict.reason)
        assert verdict.details["result"] == [True] * len(task.hidden["tests"])


def test_wrong_runtime_error_and_timeout_get_livecodebench_codes(env) -> None:
    task = env.row_to_task(ADD_ROW, 0)
    cases = {
        ADD: ([True, True, True], 1.0),
        program("a, b = map(int, input().split())\nprint(a + b + (a == 5))"): ([True, -2], 0.0),
        program("a, b = map(int, input().split())\nprint(a // (b - 2))"): ([-4], 0.0),
        program("import sys\na, b = map(int, input().split())\nprint(a + b)\nsys.exit(3)"): ([-4], 0.0),
        program("while True: pass"): ([-3], 0.0),
        program("print(3)\nprint(4)"): ([-2], 0.0),
    }
    for answer, (result, reward) in cases.items():
        verdict = env.verify(task, answer)
        assert (verdict.details["result"], verdict.reward) == (result, reward), (answer, verdict)
    assert "wrong answer: 2 output line(s), expected 1" in env.verify(task, program("print(3)\nprint(4)")).reason


def test_global_timeout_marks_the_test_it_cut(env) -> None:
    tests = UnitTests(("",) * 5, ("ok",) * 5)
    verdict = verify_stdio_tests(
        env.sandbox, solution="import time\ntime.sleep(0.4)\nprint('ok')", tests=tests, timeout_s=2, total_timeout_s=1.0
    )
    assert verdict.reward == 0.0 and verdict.details["result"][-1] == -1
    assert verdict.details["result"][:-1] == [True] * (len(verdict.details["result"]) - 1)


def test_tests_run_at_once_give_the_sequential_result_lists() -> None:
    """parallel_tests runs one answer's tests concurrently; the result list (LiveCodeBench's, cut at the first
    failure) is the same as one test after another."""
    row = {
        "responses_create_params": {"input": "Read n, print n squared."},
        "verifier_metadata": {
            "unit_tests": {"inputs": [f"{n}\n" for n in range(8)], "outputs": [f"{n * n}\n" for n in range(8)]}
        },
    }
    answers = [
        program("n = int(input())\nprint(n * n)"),
        program("n = int(input())\nprint(n * n + (n == 5))"),  # wrong at test 5
        program("n = int(input())\nassert n != 6\nprint(n * n)"),  # runtime error at test 6
        program("import time\nn = int(input())\ntime.sleep(5 if n == 2 else 0)\nprint(n * n)"),  # time limit at 2
        program("n = int(input())\nprint(n * n)\nprint(n)"),  # wrong from the first test
    ]
    results = {}
    for parallel in (1, 4):
        env = CompCodingEnv(data=[row], timeout_s=1, total_timeout_s=20, parallel_tests=parallel)
        try:
            task = env.tasks[0]
            results[parallel] = [env.verify(task, answer).details["result"] for answer in answers]
            assert len(env._extra_sandboxes()) == parallel - 1
        finally:
            env.close()
    assert results[1] == results[4]
    assert results[1][:4] == [[True] * 8, [True] * 5 + [-2], [True] * 6 + [-4], [True, True, -3]]
    assert results[1][4] == [-2]
    with pytest.raises(ValueError, match="parallel_tests"):
        CompCodingEnv(data=[row], parallel_tests=0)


def test_output_comparison_rules() -> None:
    assert outputs_match("1 2 \n3\n\n", "1 2\n3")[0]  # whitespace around lines and at the ends is ignored
    assert not outputs_match("1 2\n\n3", "1 2\n3")[0]  # but not blank lines in the middle
    assert outputs_match("1.50", "1.5")[0] and outputs_match("0.3333333", "0.33333333")[0]
    assert not outputs_match("0.3333", "0.33333333")[0]
    assert outputs_match("0.3333", "0.33333333", float_tolerance=1e-3)[0]
    assert not outputs_match("0.3333333", "0.33333333", float_tolerance=None)[0]
    assert not outputs_match("50000000000000001", "50000000000000000")[0]  # integers are exact
    assert outputs_match("1e3", "1000")[0] and not outputs_match("YES", "NO")[0]
    assert not outputs_match("nan", "NaN")[0] and not outputs_match("inf", "1e400")[0]
    assert not outputs_match("sNaN", "1")[0]


def test_malformed_answer_gets_feedback_and_another_try() -> None:
    env = gym.make("nemo/CompCoding-v0", max_attempts=2, timeout_s=2)
    try:
        env.reset(options={"task": ADD_ROW})
        obs, reward, term, trunc, info = env.step("I would add the numbers.")
        assert (reward, term, trunc) == (0.0, False, False)
        assert "no ```python code block" in obs and "1 attempt(s) left" in obs
        obs, reward, term, _, info = env.step(ADD)
        assert reward == 1.0 and term and info["verdict"]["details"]["result"] == [True, True, True]
    finally:
        env.close()


def test_tool_runs_with_stdin_and_row_round_trip() -> None:
    env = gym.make("nemo/CompCoding-v0", timeout_s=2)
    try:
        obs, info = env.reset(options={"task": ADD_ROW})
        assert info["task_id"] == "add" and "Read two integers" in obs
        call = {"name": "execute_python", "arguments": {"code": "print(int(input()) * 2)", "stdin": "21\n"}}
        obs, _, term, *_ = env.step(f"<tool_call>{json.dumps(call)}</tool_call>")
        assert "exit code 0" in obs and "42" in obs and not term
        *_, info = env.step(ADD)
        assert info["task_row"]["hash_id"] == "add" and info["verdict"]["reward"] == 1.0
    finally:
        env.close()


def test_packed_tests_and_bad_rows() -> None:
    packed = base64.b64encode(zlib.compress(json.dumps({"inputs": ["1 1\n"], "outputs": ["2\n"]}).encode())).decode()
    assert parse_unit_tests({"packed": packed}) == UnitTests(("1 1\n",), ("2\n",))
    assert parse_unit_tests(json.dumps({"inputs": ["x"], "outputs": ["y"]})) == UnitTests(("x",), ("y",))
    for bad in [{}, {"inputs": ["1"], "outputs": []}, {"inputs": ["1"], "outputs": ["1"], "fn_name": "f"}, "{"]:
        with pytest.raises(ValueError):
            parse_unit_tests(bad)
    with pytest.raises(ValueError, match="unit_tests"):
        CompCodingEnv.row_to_task({"responses_create_params": {"input": "x"}, "verifier_metadata": {}}, 0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.text(max_size=200),
        st.builds(lambda s: f"```python\n{s}\n```", st.text(max_size=80)),
        st.builds(
            lambda c, s: "<tool_call>" + json.dumps({"name": "execute_python", "arguments": {"code": c, "stdin": s}}),
            st.text(max_size=40),
            st.one_of(st.text(max_size=20), st.integers()),
        ),
    )
)
def test_fuzzed_actions_never_crash(env, action: str) -> None:
    env.reset(options={"task": ADD_ROW})
    obs, reward, _, _, info = env.step(action)
    assert isinstance(obs, str) and math.isfinite(reward) and "infra_error" not in info
