"""The TextEnv contract of DESIGN.md, on a small env defined here and on CodeExec."""

import json
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import pytest
from gymnasium.error import ResetNeeded

from gym_nemo.core import FORMAT_PENALTY, InfraError, Task, TextEnv, Tool, Verdict, input_messages
from gym_nemo.envs.code_exec import CodeExecEnv
from gym_nemo.sandbox import ExecResult


class GuessEnv(TextEnv):
    """Guess a number; a ``hint`` tool; its verifier can be made to fail like infrastructure does."""

    verifier_name = "guess"

    def __init__(self, broken: str | None = None, **kwargs: Any) -> None:
        self.broken = broken
        super().__init__(**kwargs)

    @classmethod
    def bundled_rows(cls) -> Sequence[Mapping[str, Any]]:
        return [{"responses_create_params": {"input": f"Guess {n}."}, "expected_answer": str(n)} for n in (3, 7)]

    @classmethod
    def row_to_task(cls, row: Mapping[str, Any], index: int) -> Task:
        answer = row["expected_answer"]
        return Task(f"guess-{answer}", tuple(input_messages(row)), {"answer": answer}, row, answer)

    def make_tools(self) -> Sequence[Tool]:
        def hint(parity: bool = False) -> str:
            if self.broken == "tool":
                raise InfraError("hint service unreachable")
            if self.broken == "tool_bug":
                raise KeyError("oops")
            return "odd" if int(self.task.hidden["answer"]) % 2 else "even"

        schema = {"type": "object", "properties": {"parity": {"type": "boolean"}}, "additionalProperties": False}
        return [Tool("hint", "Parity of the number.", schema, hint)]

    def verify(self, task: Task, answer: str) -> Verdict:
        if self.broken == "verifier":
            return Verdict.infra_failure("judge timed out")
        ok = answer.strip() == task.hidden["answer"]
        return Verdict(float(ok), ok, float(ok), "correct" if ok else "wrong number")


def call(name: str, **arguments: Any) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def test_reset_selects_tasks_reproducibly_and_by_option() -> None:
    env = GuessEnv()
    assert env.reset(seed=5)[0] == env.reset(seed=5)[0]
    assert env.reset(options={"task_id": "guess-7"})[1]["task_id"] == "guess-7"
    assert env.reset(options={"task_index": 0})[1]["task_id"] == "guess-3"
    row = {"responses_create_params": {"input": [{"role": "user", "content": "Guess 11."}]}, "expected_answer": "11"}
    obs, info = env.reset(options={"task": row})
    assert "Guess 11." in obs and info["task_id"] == "guess-11"
    with pytest.raises(KeyError):
        env.reset(options={"task_id": "nope"})
    with pytest.raises(IndexError):
        env.reset(options={"task_index": 2})


def test_task_ids_restrict_the_pool_and_unknown_ids_fail() -> None:
    env = GuessEnv(task_ids=["guess-7"])
    assert {env.reset(seed=s)[1]["task_id"] for s in range(10)} == {"guess-7"}
    with pytest.raises(ValueError, match="unknown task ids"):
        GuessEnv(task_ids=["guess-99"])


def test_step_reward_contract_over_an_episode() -> None:
    env = GuessEnv(max_attempts=2, reward_mode="dense")
    env.reset(options={"task_id": "guess-7"})
    obs, r, term, trunc, info = env.step(call("hint"))
    assert obs == "odd" and r == 0.0 and info["reward_components"] == {} and not (term or trunc)
    obs, r, term, trunc, info = env.step("5")
    assert r == 0.0 and not term and "1 attempt(s) left" in obs and info["verdict"]["reason"] == "wrong number"
    assert info["messages"][-1]["role"] == "user"
    obs, r, term, trunc, info = env.step("7")
    assert r == 1.0 and term and info["reward_components"] == {"verifier": 1.0}
    assert info["episode_return"] == 1.0 and info["verdict"]["passed"]
    assert info["versions"]["verifier"] == "guess@0" and info["verdict"]["verifier"] == "guess@0"
    with pytest.raises(ResetNeeded):
        env.step("7")


def test_malformed_steps_cost_the_format_penalty_only_in_dense_mode() -> None:
    for mode, expected in (("sparse", 0.0), ("dense", -FORMAT_PENALTY)):
        env = GuessEnv(reward_mode=mode)
        env.reset(seed=0)
        for bad in ("", "   ", "<tool_call>{oops</tool_call>", call("nope"), call("hint", parity="yes")):
            obs, r, term, _trunc, info = env.step(bad)
            assert r == expected and "[error]" in obs and not term, (mode, bad, obs)
            assert info["reward_components"] == {"format": expected}
            env.reset(seed=0)


def test_unknown_tool_and_bad_arguments_are_explained() -> None:
    env = GuessEnv()
    env.reset(seed=0)
    assert "unknown tool 'search' (available: hint)" in env.step(call("search", q="x"))[0]
    assert "invalid arguments for 'hint'" in env.step(call("hint", parity="yes"))[0]
    assert "invalid arguments for 'hint'" in env.step(call("hint", extra=1))[0]


def test_turn_limit_truncates_with_an_explanation() -> None:
    env = GuessEnv(max_turns=2)
    env.reset(seed=0)
    assert not env.step(call("hint"))[3]
    obs, _r, term, trunc, info = env.step(call("hint"))
    assert trunc and not term and "turn limit of 2 reached" in obs and "verdict" not in info


@pytest.mark.parametrize("where", ["tool", "tool_bug", "verifier"])
def test_infrastructure_failure_is_truncation_not_a_zero(where: str) -> None:
    env = GuessEnv(broken=where)
    env.reset(seed=0)
    action = "3" if where == "verifier" else call("hint")
    obs, r, term, trunc, info = env.step(action)
    assert trunc and not term and r == 0.0
    assert info["infra_error"] and "[infrastructure error]" in obs
    assert "verifier" not in info["reward_components"]


class DeadSandbox:
    name = "dead"

    def run(self, code: str, **kwargs: Any) -> ExecResult:
        return ExecResult(infra_error="sandbox host unreachable")

    def session(self, **kwargs: Any) -> "DeadSandbox":
        return self

    def enforced(self) -> dict[str, bool]:
        return {}

    def close(self) -> None:
        pass

    def __enter__(self) -> "DeadSandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def test_codeexec_sandbox_failure_is_reported_as_infra_error() -> None:
    env = CodeExecEnv(sandbox=DeadSandbox())
    env.reset(seed=0)
    obs, r, term, trunc, info = env.step(call("execute_python", code="print(1)"))
    assert trunc and not term and r == 0.0 and info["infra_error"] == "sandbox: sandbox host unreachable"
    assert obs.startswith("[infrastructure error]")
    env.reset(seed=0)
    _obs, _r, term, trunc, info = env.step("```python\nprint(1)\n```")
    assert trunc and not term and info["verdict"]["infra_error"] == "sandbox host unreachable"


def test_row_system_prompt_is_kept() -> None:
    env = GuessEnv()
    row = {
        "responses_create_params": {
            "input": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Guess 2."}]
        },
        "expected_answer": "2",
    }
    _, info = env.reset(options={"task": row})
    assert [m["role"] for m in info["messages"]] == ["system", "user"]
    assert info["messages"][0]["content"].startswith("Be terse.")


def test_render_modes() -> None:
    env = GuessEnv(render_mode="ansi")
    env.reset(options={"task_id": "guess-3"})
    env.step("3")
    assert "<assistant>\n3" in env.render()
    with pytest.raises(ValueError):
        GuessEnv(render_mode="rgb_array")


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError):
        GuessEnv(reward_mode="shaped")
    with pytest.raises(ValueError):
        GuessEnv(max_attempts=0)
    with pytest.raises(ValueError):
        GuessEnv(max_turns=1, max_attempts=2)


def test_registered_time_limit_is_a_hard_cap() -> None:
    env = gym.make("nemo/CodeExec-v0", max_turns=3)
    assert env.spec.max_episode_steps == 64 and env.unwrapped.max_turns == 3
    env.close()


def test_every_observation_the_policy_gets_is_in_the_chat() -> None:
    """What a step observes is what it added to info["messages"], so chat templates show the same thing."""
    env = GuessEnv()
    env.reset(seed=0)
    for action in ("", "x" * (env.max_action_chars + 1), None, call("nope"), call("hint") + "\ud800"):
        before = len(env.messages)
        obs, _, term, trunc, info = env.step(action)
        added = info["messages"][before + 1 :]  # after the assistant's own message
        assert not (term or trunc) and added, action
        assert obs == "\n\n".join(m["content"] for m in added), (action, obs, added)
