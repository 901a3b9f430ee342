"""``nemo/AgentWorkflow-v0``: inverted control, concurrent requests, infra errors (raise, timeout, failure
before the first call, a killed /run service), the three workflow forms, TokenEnv, make_vec, collectors."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import warnings
from functools import partial

import gymnasium as gym
import httpx
import pytest
from gymnasium.utils.env_checker import check_env

pytest.importorskip("fastapi")

import gym_nemo
from gym_nemo.agents import AgentWorkflowEnv
from gym_nemo.agents.workflows import CALCULATOR_ROWS
from gym_nemo.testing.scripted_policy import tool_call_text
from tests.agent_helpers import CalculatorTextPolicy

ROW = CALCULATOR_ROWS[0]  # 17 * 23 = 391


def ask(question: str):
    """A one-call workflow: the reward is 1.0 iff the model's answer is 'yes'."""

    def workflow(row, base_url):
        reply = httpx.post(f"{base_url}/chat/completions", json={"messages": [{"role": "user", "content": question}]})
        return float(reply.json()["choices"][0]["message"]["content"] == "yes")

    return workflow


def test_reset_shows_the_first_request_and_steps_answer_it() -> None:
    env = gym.make("nemo/AgentWorkflow-v0")
    obs, info = env.reset(options={"task_id": ROW["task_id"]})
    assert ROW["question"] in obs and info["messages"][-1] == {"role": "user", "content": ROW["question"]}
    assert info["tools"][0]["function"]["name"] == "calculate" and info["request_id"] == 0
    obs, reward, terminated, truncated, info = env.step(tool_call_text("calculate", {"expression": "17 * 23"}))
    assert obs == "391" and reward == 0.0 and not (terminated or truncated)
    assert info["answered_request"] == 0 and info["request_id"] == 1
    assert info["messages"][-2]["tool_calls"][0]["function"]["name"] == "calculate"  # structured for the agent
    obs, reward, terminated, truncated, info = env.step("The answer is 391.")
    assert (reward, terminated, truncated) == (1.0, True, False) and "infra_error" not in info
    assert info["messages"][-1] == {"role": "assistant", "content": "The answer is 391."}
    assert info["versions"]["workflow"].endswith("calculator_workflow")
    assert env.unwrapped.run.finished and len(env.unwrapped.run.calls) == 2
    env.reset(options={"task_id": ROW["task_id"]})
    assert env.step("I don't know")[1:3] == (0.0, True)
    env.close()


def test_odd_actions_reach_the_agent_as_text() -> None:
    env = gym.make("nemo/AgentWorkflow-v0", workflow=ask("Say yes."), data=[{"task_id": "a"}])
    for action in ("bad \ud800 surrogate", "", "x" * 200_000, '<tool_call>{"name": broken</tool_call>'):
        env.reset(seed=0)
        _obs, reward, terminated, truncated, info = env.step(action)
        assert (reward, terminated, truncated) == (0.0, True, False) and "infra_error" not in info
    env.close()


def test_check_env_with_a_custom_workflow_and_rows() -> None:
    env = gym.make("nemo/AgentWorkflow-v0", workflow=ask("Say yes."), data=[{"task_id": "a"}, {"task_id": "b"}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=False)
    env.reset(seed=0)
    assert env.step("yes")[1:3] == (1.0, True)
    env.close()


def test_concurrent_requests_are_served_one_per_step() -> None:
    def fan_out(row, base_url):
        answers: dict[int, str] = {}

        def sub_agent(i: int) -> None:
            body = {"messages": [{"role": "user", "content": f"sub-task {i}"}]}
            answers[i] = httpx.post(f"{base_url}/chat/completions", json=body, timeout=30).json()["choices"][0][
                "message"
            ]["content"]

        threads = [threading.Thread(target=sub_agent, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return float(all(answers[i] == f"done {i}" for i in range(3)))

    env = AgentWorkflowEnv(fan_out, data=[{"task_id": "x"}])
    obs, info = env.reset(seed=0)
    served, answered, done = [], [], False
    while not done:
        served.append(info["request_id"])
        obs, reward, terminated, truncated, info = env.step(f"done {obs.rsplit(' ', 1)[1]}")
        answered.append(info["answered_request"])
        done = terminated or truncated
    assert reward == 1.0 and sorted(served) == [0, 1, 2] and answered == served
    env.close()


def test_a_workflow_that_raises_is_truncated_with_an_infra_error() -> None:
    def crashes(row, base_url):
        httpx.post(f"{base_url}/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        raise ConnectionError("the tool backend is down")

    env = AgentWorkflowEnv(crashes, data=[{"task_id": "x"}])
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step("hello")
    assert (reward, terminated, truncated) == (0.0, False, True)
    assert "ConnectionError: the tool backend is down" in info["infra_error"] and "infrastructure error" in obs
    env.close()


def test_a_workflow_that_fails_before_its_first_call() -> None:
    def broken(row, base_url):
        raise KeyError("question")

    env = AgentWorkflowEnv(broken, data=[{"task_id": "x"}])
    obs, info = env.reset(seed=0)
    assert "KeyError" in info["infra_error"] and "before its first LLM call" in obs
    obs, reward, terminated, truncated, info = env.step("anything")
    assert (reward, terminated, truncated) == (0.0, False, True) and "KeyError" in info["infra_error"]
    env.close()


@pytest.mark.parametrize("score", [float("nan"), "high", None])
def test_a_workflow_without_a_finite_score_is_an_infra_error(score) -> None:
    env = AgentWorkflowEnv(lambda row, url: score, data=[{"task_id": "x"}])
    env.reset(seed=0)
    assert "not a finite score" in env.step("x")[4]["infra_error"]
    env.close()


def test_a_workflow_that_hangs_times_out_and_its_agent_is_released() -> None:
    outcome: dict[str, int] = {}

    def slow(row, base_url):
        httpx.post(f"{base_url}/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        time.sleep(1.5)
        outcome["late"] = httpx.post(
            f"{base_url}/chat/completions", json={"messages": [{"role": "user", "content": "again"}]}
        ).status_code
        return 1.0

    env = AgentWorkflowEnv(slow, data=[{"task_id": "x"}], timeout_s=0.5)
    env.reset(seed=0)
    _obs, _reward, terminated, truncated, info = env.step("hello")
    assert truncated and not terminated and "timeout_s=0.5" in info["infra_error"]
    time.sleep(2.0)
    assert outcome["late"] == 410  # the run is finished: the agent's next call fails fast instead of hanging
    env.close()


def test_an_abandoned_episode_releases_its_waiting_agent() -> None:
    statuses: list[int] = []

    def waits(row, base_url):
        statuses.append(
            httpx.post(
                f"{base_url}/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}, timeout=30
            ).status_code
        )
        return 0.0

    env = AgentWorkflowEnv(waits, data=[{"task_id": "x"}])
    env.reset(seed=0)
    env.reset(seed=1)  # abandons the first run with its request unanswered
    deadline = time.monotonic() + 10
    while not statuses and time.monotonic() < deadline:
        time.sleep(0.05)
    assert statuses[0] == 410
    env.close()


def test_import_path_workflow() -> None:
    env = gym.make("nemo/AgentWorkflow-v0", workflow="gym_nemo.agents.workflows:calculator_workflow")
    env.reset(options={"task_index": 3})
    env.step(tool_call_text("calculate", {"expression": "999 + 1001"}))
    assert env.step("2000")[1] == 1.0
    env.close()


RUN_SERVICE = """
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from gym_nemo.agents.workflows import calculator_workflow

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        row = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if row.get("question") == "hang":
            import time; time.sleep(3600)
        reward = calculator_workflow(row, row.pop("base_url"))
        body = json.dumps({**row, "response": {}, "reward": reward}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
"""


def test_http_run_endpoint_workflow_and_killing_it_mid_run() -> None:
    proc = subprocess.Popen([sys.executable, "-c", RUN_SERVICE], stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        env = gym.make(
            "nemo/AgentWorkflow-v0", workflow=url, data=[*CALCULATOR_ROWS, {"task_id": "h", "question": "hang"}]
        )
        env.reset(options={"task_id": ROW["task_id"]})
        env.step(tool_call_text("calculate", {"expression": "17 * 23"}))
        assert env.step("391")[1:3] == (1.0, True)
        env.reset(options={"task_id": ROW["task_id"]})  # mid-run: the service is waiting for our answer
        proc.kill()
        proc.wait(10)
        _obs, reward, terminated, truncated, info = env.step(tool_call_text("calculate", {"expression": "17 * 23"}))
        assert truncated and not terminated and reward == 0.0 and f"POST {url}/run failed" in info["infra_error"]
        env.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_text_collector_over_make_vec() -> None:
    from gym_nemo.rollout import collect_rollouts

    envs = gym_nemo.make_vec("nemo/AgentWorkflow-v0", 2, vectorization_mode="async")
    try:
        records, summary = collect_rollouts(
            envs, CalculatorTextPolicy(), 4, env_id="nemo/AgentWorkflow-v0", progress=False
        )
    finally:
        envs.close()
    assert summary.mean_reward == 1.0 and [r.num_turns for r in records] == [2, 2, 2, 2]
    assert all(r.terminated and r.infra_error is None and r.messages[-1]["role"] == "assistant" for r in records)


def test_token_env_and_token_collector(tmp_path) -> None:
    pytest.importorskip("transformers")
    from gym_nemo.rollout import collect_token_rollouts, collect_token_rollouts_async
    from gym_nemo.testing.scripted_policy import ScriptedChatPolicy
    from gym_nemo.testing.tiny_model import build_tokenizer
    from gym_nemo.wrappers import TokenEnv

    tokenizer = build_tokenizer("chatml")
    envs = gym_nemo.make_vec(
        "nemo/AgentWorkflow-v0", 2, vectorization_mode="sync", wrappers=[partial(TokenEnv, tokenizer=tokenizer)]
    )
    try:
        records, metrics = collect_token_rollouts(
            envs, ScriptedChatPolicy(tokenizer), 4, env_id="nemo/AgentWorkflow-v0", group_size=2, progress=False,
            out=tmp_path / "r.jsonl",
        )  # fmt: skip
    finally:
        envs.close()
    assert metrics.mean_reward == 1.0 and metrics.infra_error_rate == 0.0
    for record in records:
        ids = record.prompt_ids + record.completion_ids
        text = tokenizer.decode(ids, skip_special_tokens=False)
        assert "<tool_response>\n" in text and "The answer is" in text
    assert len(json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])["completion_mask"]) > 0
    records, metrics = collect_token_rollouts_async(
        lambda: TokenEnv(gym.make("nemo/AgentWorkflow-v0"), tokenizer),
        ScriptedChatPolicy(tokenizer),
        4,
        env_id="nemo/AgentWorkflow-v0",
        max_in_flight=2,
        progress=False,
    )
    assert metrics.mean_reward == 1.0 and len(records) == 4 and all(r.completion_mask for r in records)
