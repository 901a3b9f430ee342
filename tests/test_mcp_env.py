"""nemo/MCP-v0 against the real mcp-server-time and mcp-server-git (PyPI), started over stdio as
``python -m`` subprocesses; the git tasks run on a temporary repository made per episode."""

from __future__ import annotations

import json
import signal
import sys
import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

pytest.importorskip("mcp", reason="nemo/MCP-v0 needs the serve extra (mcp SDK)")
pytest.importorskip("mcp_server_time", reason="the tests drive mcp-server-time (serve extra)")
pytest.importorskip("mcp_server_git", reason="the tests drive mcp-server-git (serve extra)")

import psutil

from gym_nemo.core.errors import InfraError
from gym_nemo.envs.mcp import MCPEnv


def call(name: str, arguments: dict) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def play(env: MCPEnv, task_id: str, messages: list[str]) -> tuple[float, bool, bool, dict]:
    env.reset(options={"task_id": task_id})
    workdir = str(env._workdir)
    for message in messages:
        _, reward, terminated, truncated, info = env.step(message.replace("{workdir}", workdir))
        if terminated or truncated:
            return reward, terminated, truncated, info
    raise AssertionError("the episode did not end")


@pytest.fixture(scope="module")
def env():
    env = gym.make("nemo/MCP-v0")
    yield env.unwrapped
    env.close()


def test_check_env_and_the_servers_tools_are_the_envs_tools(env) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, skip_render_check=False)
    assert len(env._connections) == 2  # the time and the git server, each started once and reused
    _, info = env.reset(options={"task_id": "time/utc-noon-to-tokyo"})
    assert {t["function"]["name"] for t in info["tools"]} == {"get_current_time", "convert_time"}
    _, info = env.reset(options={"task_id": "git/commit-greeting"})
    names = {t["function"]["name"] for t in info["tools"]}
    assert {"git_status", "git_add", "git_commit", "git_log", "git_create_branch"} <= names
    assert str(env._workdir) in info["messages"][-1]["content"]  # {workdir} filled in


def test_every_bundled_task_passes_with_its_reference_and_fails_without(env) -> None:
    for task in env.tasks:
        reward, terminated, _, info = play(env, task.task_id, list(task.reference))
        assert (reward, terminated) == (1.0, True), (task.task_id, info.get("verdict"))
        # skipping the tool work (state tasks) or giving another answer fails the check
        reward, terminated, _, info = play(env, task.task_id, ["I am done: 03:00, 1.0, other.txt"])
        assert (reward, terminated) == (0.0, True), task.task_id
        assert info["verdict"]["passed"] is False and "infra_error" not in info


def test_tool_errors_and_bad_arguments_are_the_policys_not_infra(env) -> None:
    env.reset(options={"task_id": "time/utc-noon-to-tokyo"})
    bad_zone = call("convert_time", {"source_timezone": "Mars/Olympus", "time": "12:00", "target_timezone": "UTC"})
    obs, _, terminated, truncated, info = env.step(bad_zone)
    assert obs.startswith("[tool error]") and "Mars/Olympus" in obs and not (terminated or truncated)
    obs, _, terminated, truncated, info = env.step(call("convert_time", {"time": 12}))
    assert "invalid arguments" in obs and not (terminated or truncated) and "infra_error" not in info
    obs, *_ = env.step(call("no_such_tool", {}))
    assert "unknown tool" in obs


def test_custom_rows_file_and_all_verifiers(tmp_path) -> None:
    row = {
        "responses_create_params": {"input": "Commit notes.md in {workdir} with the message 'docs', then say ok."},
        "verifier_metadata": {
            "task_id": "custom/commit-notes",
            "mcp_server": {"command": "{python}", "args": ["-m", "mcp_server_git"]},
            "workdir": {"files": {"notes.md": "# notes\n"}, "git": True},
            "verifier": {
                "type": "all",
                "checks": [
                    {"type": "file", "path": "notes.md", "contains": "# notes"},
                    {
                        "type": "tool_state",
                        "tool": "git_log",
                        "arguments": {"repo_path": "{workdir}"},
                        "contains": "docs",
                    },
                    {"type": "regex", "pattern": "^ok"},
                ],
            },
        },
    }
    env = gym.make("nemo/MCP-v0", data=[row])
    try:
        steps = [call("git_add", {"repo_path": "{workdir}", "files": ["notes.md"]}),
                 call("git_commit", {"repo_path": "{workdir}", "message": "docs"}), "ok"]  # fmt: skip
        reward, terminated, _, _ = play(env.unwrapped, "custom/commit-notes", steps)
        assert (reward, terminated) == (1.0, True)
        reward, _, _, info = play(env.unwrapped, "custom/commit-notes", ["ok"])  # nothing committed
        assert reward == 0.0 and "final state is not as required" in info["verdict"]["reason"]
    finally:
        env.close()
    with pytest.raises(ValueError, match="'verifier' must be an object"):
        gym.make("nemo/MCP-v0", data=[{**row, "verifier_metadata": {**row["verifier_metadata"], "verifier": {}}}])
    with pytest.raises(ValueError, match="needs a 'command' string"):
        gym.make("nemo/MCP-v0", data=[{**row, "verifier_metadata": {"verifier": {"type": "regex", "pattern": "x"}}}])


def test_a_server_that_cannot_start_or_dies_is_an_infra_error(env) -> None:
    row = {
        "responses_create_params": {"input": "anything"},
        "verifier_metadata": {
            "mcp_server": {"command": sys.executable, "args": ["-m", "no_such_mcp_server_module"]},
            "verifier": {"type": "contains", "value": "x"},
        },
    }
    broken = MCPEnv(data=[row], startup_timeout_s=20)
    with pytest.raises(InfraError, match="did not start"):
        broken.reset()
    broken.close()
    env.reset(options={"task_id": "time/utc-noon-to-tokyo"})
    servers = [p for p in psutil.Process().children(recursive=True) if "mcp_server_time" in " ".join(p.cmdline())]
    assert servers, "no mcp_server_time process found"
    for server in servers:  # the server dies mid-episode
        server.send_signal(signal.SIGKILL)
        server.wait(10)
    tool = call("convert_time", {"source_timezone": "Etc/UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"})
    obs, reward, terminated, truncated, info = env.step(tool)
    assert truncated and not terminated and reward == 0.0 and "infra_error" in info
    assert obs.startswith("[infrastructure error]")
    _, info = env.reset(options={"task_id": "time/utc-noon-to-tokyo"})  # a fresh server takes over
    assert "21:00" in env.step(tool)[0]


def test_a_gym_nemo_envs_tools_served_over_mcp_drive_an_mcp_env() -> None:
    # gym-nemo serve-mcp exposes CodeExec's stateful execute_python over MCP; nemo/MCP-v0 is its client.
    row = {
        "responses_create_params": {"input": "Use execute_python to compute 2**100 and tell me the number."},
        "verifier_metadata": {
            "task_id": "self/pow",
            "mcp_server": {"command": "{python}", "args": ["-m", "gym_nemo.cli", "serve-mcp", "nemo/CodeExec-v0"]},
            "verifier": {"type": "contains", "value": str(2**100)},
        },
    }
    env = MCPEnv(data=[row])
    try:
        _, info = env.reset()
        assert [t["function"]["name"] for t in info["tools"]] == ["execute_python"]
        assert "exit code 0" in env.step(call("execute_python", {"code": "x = 2**100"}))[0]
        assert str(2**100) in env.step(call("execute_python", {"code": "print(x)"}))[0]  # the session persists
        obs, _, terminated, truncated, _ = env.step(call("execute_python", {"code": "raise SystemExit(3)"}))
        assert "exit code 3" in obs and not (terminated or truncated)
        assert env.step(f"The number is {2**100}.")[1:3] == (1.0, True)
    finally:
        env.close()
