"""Every string is a legal action: bad ones get an explanation and a defined reward, never a crash."""

import json
import math

import gymnasium as gym
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gym_nemo import make_vec


def run_code(code: str) -> str:
    return f"<tool_call>{json.dumps({'name': 'execute_python', 'arguments': {'code': code}})}</tool_call>"


@pytest.fixture(scope="module")
def env():
    env = gym.make("nemo/CodeExec-v0", timeout_s=2, reward_mode="dense", max_turns=64)
    yield env
    env.close()


def check_step(env, action, *, expect_in: str | None = None):
    if env.unwrapped.task is None or env.unwrapped._done:
        env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(action)
    assert isinstance(obs, str) and env.observation_space.contains(obs)
    assert isinstance(reward, float) and math.isfinite(reward)
    lo, hi = env.unwrapped.reward_range
    assert lo <= reward <= hi
    assert isinstance(terminated, bool) and isinstance(truncated, bool)
    assert "infra_error" not in info, info.get("infra_error")  # the policy's mistakes are never infra errors
    obs.encode("utf-8")  # observations are always valid UTF-8
    if expect_in is not None:
        assert expect_in in obs, obs[:500]
    if terminated or truncated:
        env.reset(seed=0)
    return obs, reward, terminated, truncated, info


CASES = {
    "empty": ("", "empty"),
    "whitespace": ("  \n\t ", "empty"),
    "100kB prose": ("word " * 20_000, "[verdict]"),
    "over the limit": ("x" * 200_001, "limit is 200,000"),
    "truncated json": ('<tool_call>{"name": "execute_python", "arguments": {"code": "pri', "not valid JSON"),
    "invalid json": ("<tool_call>{name: execute_python}</tool_call>", "not valid JSON"),
    "unknown tool": ('<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>', "unknown tool 'rm_rf'"),
    "wrong arg type": (
        '<tool_call>{"name": "execute_python", "arguments": {"code": 5}}</tool_call>',
        "is not of type 'string'",
    ),
    "missing arg": ('<tool_call>{"name": "execute_python", "arguments": {}}</tool_call>', "'code' is a required"),
    "arguments not object": ('{"name": "execute_python", "arguments": 3}', "must be a JSON object"),
    "lone surrogate": ("answer \ud800 here", "unpaired surrogates"),
    "surrogate in code": (run_code("print('\udcff')"), "exit code 0"),
    "surrogate beside a call": (run_code("print(1)") + "\ud800", "unpaired surrogates"),
    "nul bytes": ("\x00\x00 final \x00", "[verdict]"),
    "nul in code": (run_code("print(1)\x00"), "null bytes"),
    "never ends": (run_code("while True: pass"), "timed out"),
    "prints 1 GB": (run_code("import sys\nwhile True: sys.stdout.write('x' * 1_000_000)"), "output limit"),
    "eats memory": (run_code("x = bytearray(4 * 1024**3)"), "MemoryError"),
    "huge file": (run_code("open('big', 'wb').write(b'x' * 64 * 1024 * 1024)"), "file size limit exceeded"),
    "many calls": ("\n".join(run_code(f"print({i})") for i in range(5)), "exit code 0"),
    "final code that never ends": ("```python\nwhile True: pass\n```", "timed out"),
    "final code printing 1 GB": ("```python\nwhile True: print('x' * 10**6)\n```", "output limit"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_action(env, name: str) -> None:
    action, expected = CASES[name]
    check_step(env, action, expect_in=expected)


@pytest.mark.parametrize("action", [None, 3, b"\xff\xfe bytes", ["list"]])
def test_non_string_actions(env, action) -> None:
    obs, *_ = check_step(env, action)
    assert obs.startswith("[error]") or obs.startswith("[note]") or "[verdict]" in obs


tool_call_like = st.builds(
    lambda name, args, close: f"<tool_call>{json.dumps({'name': name, 'arguments': args})}{close}",
    st.sampled_from(["execute_python", "nope", "", "execute_python "]),
    st.dictionaries(
        st.sampled_from(["code", "x", ""]),
        st.one_of(st.text(max_size=40), st.integers(), st.none(), st.booleans()),
        max_size=3,
    ),
    st.sampled_from(["</tool_call>", "", "</tool_call> trailing"]),
)
actions = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=100),  # includes surrogates
    tool_call_like,
    st.builds(lambda s: f"```python\n{s}\n```", st.text(max_size=80)),
    st.builds(lambda s: "{" + s, st.text(max_size=50)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions)
def test_fuzzed_actions_never_crash(env, action: str) -> None:
    check_step(env, action)


def test_vector_env_survives_bad_actions() -> None:
    envs = make_vec("nemo/CodeExec-v0", 4, timeout_s=2)
    try:
        envs.reset(seed=0)
        batch = ["", CASES["surrogate beside a call"][0], CASES["truncated json"][0], run_code("while True: pass")]
        obs, _rewards, _term, _trunc, _ = envs.step(batch)
        assert all(isinstance(o, str) and o for o in obs)
        assert "empty" in obs[0] and "surrogates" in obs[1] and "not valid JSON" in obs[2] and "timed out" in obs[3]
        obs, *_ = envs.step(["ok"] * 4)
        assert len(obs) == 4
    finally:
        envs.close()
