"""Real agent frameworks from PyPI through the capturing gateway, offline: a LangGraph agent with tools, the
OpenAI Agents SDK, and a NeMo Gym-style ``/run`` service wrapping the LangGraph agent; each driven by the
scripted tool-calling policy (exact tool calls: reward 1.0) and by the tiny random-init HF model (random
text: the token invariant must hold whatever it says)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("transformers")
pytest.importorskip("langgraph")
pytest.importorskip("langchain_openai")
pytest.importorskip("agents")

import gymnasium as gym
import torch

from gym_nemo.agents import Gateway, PolicyBackend, build_trajectory
from gym_nemo.agents.workflows import CALCULATOR_ROWS, resolve_workflow, run_workflow
from gym_nemo.testing.agent_workflows import langgraph_workflow, openai_agents_workflow
from gym_nemo.testing.scripted_policy import ScriptedChatPolicy, tool_call_text
from gym_nemo.testing.tiny_model import build_tokenizer

WORKFLOWS = {
    "langgraph": langgraph_workflow,
    "langgraph-streaming": lambda row, url: langgraph_workflow(row, url, streaming=True),
    "openai-agents": openai_agents_workflow,
}


@pytest.fixture(scope="module")
def scripted_gateway():
    with Gateway(PolicyBackend(ScriptedChatPolicy(build_tokenizer("chatml")))) as gw:
        yield gw


@pytest.fixture(scope="module")
def tiny_gateway(policy):
    with Gateway(PolicyBackend(policy, max_tokens=24)) as gw:
        yield gw


@pytest.fixture(scope="module")
def run_service():
    """``python -m gym_nemo.agents.run_service`` serving the LangGraph agent, in its own process."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gym_nemo.agents.run_service", "gym_nemo.testing.agent_workflows:langgraph_workflow"],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert "listening on" in line, line
    yield proc, line.rsplit(" ", 1)[1].strip()
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def assert_token_exact(record, calls, tokenizer) -> None:
    """Every completion's ids are in its segment verbatim as policy tokens, every segment's ids decode to the
    chat its last call rendered (the template on its messages and tools, then the completion)."""
    assert sum(len(s["calls"]) for s in record.segments) + sum(b["kind"] == "retry" for b in record.breaks) == len(
        calls
    )
    for segment in record.segments:
        ids = segment["prompt_ids"] + segment["completion_ids"]
        assert len(segment["completion_mask"]) == len(segment["completion_ids"]) == len(segment["completion_logprobs"])
        for index in segment["calls"]:
            call = calls[index]
            start = len(call.prompt_ids)
            assert (
                ids[:start] == call.prompt_ids and ids[start : start + len(call.completion_ids)] == call.completion_ids
            )
            offset = start - len(segment["prompt_ids"])
            assert set(segment["completion_mask"][offset : offset + len(call.completion_ids)]) == {1}
            assert segment["completion_logprobs"][offset : offset + len(call.completion_ids)] == call.logprobs
        last = calls[segment["calls"][-1]]
        rendered = tokenizer.apply_chat_template(
            last.request["messages"], tools=last.request.get("tools"), add_generation_prompt=True, tokenize=False
        )
        assert last.prompt_text == rendered
        assert tokenizer.decode(ids, skip_special_tokens=False) == rendered + last.completion_text


@pytest.mark.parametrize("name", list(WORKFLOWS))
def test_framework_with_the_scripted_tool_policy(scripted_gateway: Gateway, name: str) -> None:
    row = CALCULATOR_ROWS[2]
    run = scripted_gateway.open_run()
    assert run_workflow(WORKFLOWS[name], row, run.base_url) == 1.0
    assert [c.finish_reason for c in run.calls] == ["tool_calls", "stop"]
    assert run.calls[0].request["tools"][0]["function"]["name"] == "calculate"
    assert (
        run.calls[1].request["messages"][-1]["role"] == "tool"
        and run.calls[1].request["messages"][-1]["content"] == "1000"
    )
    record = build_trajectory(run.calls, reward=1.0, task_row=row)
    assert len(record.segments) == 1 and record.breaks == []  # the framework's history re-renders to the same ids
    assert_token_exact(record, run.calls, scripted_gateway.backend.tokenizer)


@pytest.mark.parametrize("name", list(WORKFLOWS))
def test_framework_with_the_tiny_model_keeps_the_token_invariant(tiny_gateway: Gateway, policy, name: str) -> None:
    run = tiny_gateway.open_run()
    score = run_workflow(WORKFLOWS[name], CALCULATOR_ROWS[0], run.base_url)
    assert score in (0.0, 1.0) and len(run.calls) >= 1
    record = build_trajectory(run.calls, reward=score)
    assert_token_exact(record, run.calls, policy.tokenizer)
    # The logprobs are the model's: teacher-forcing the record's ids reproduces them.
    ids = torch.tensor([record.prompt_ids + record.completion_ids])
    with torch.no_grad():
        logits = policy.model(ids).logits[0, :-1].float()
    forced = (
        torch.log_softmax(logits, -1).gather(-1, ids[0, 1:].unsqueeze(-1)).squeeze(-1)[len(record.prompt_ids) - 1 :]
    )
    mask = torch.tensor(record.completion_mask, dtype=torch.bool)
    assert torch.allclose(forced[mask], torch.tensor(record.completion_logprobs)[mask], atol=1e-3)


def test_nemo_gym_run_service_wrapping_langgraph(scripted_gateway: Gateway, tiny_gateway: Gateway, run_service) -> None:
    _, url = run_service
    endpoint = resolve_workflow(url)
    run = scripted_gateway.open_run()
    answer = endpoint(dict(CALCULATOR_ROWS[4]), run.base_url)
    assert answer["reward"] == 1.0 and answer["task_id"] == CALCULATOR_ROWS[4]["task_id"]
    assert len(build_trajectory(run.calls, reward=1.0).segments) == 1 and len(run.calls) == 2
    tiny_run = tiny_gateway.open_run()
    assert run_workflow(endpoint, CALCULATOR_ROWS[0], tiny_run.base_url) in (0.0, 1.0) and tiny_run.calls


def test_workflow_env_over_the_run_service_and_langgraph_in_process(run_service) -> None:
    _, url = run_service
    for workflow in (url, langgraph_workflow, openai_agents_workflow):
        env = gym.make("nemo/AgentWorkflow-v0", workflow=workflow)
        obs, info = env.reset(options={"task_id": "calc-1"})
        assert "(144 / 12) + 7" in obs and info["tools"][0]["function"]["name"] == "calculate"
        obs, reward, terminated, truncated, info = env.step(
            tool_call_text("calculate", {"expression": "(144 / 12) + 7"})
        )
        assert obs == "19" and not (terminated or truncated)
        obs, reward, terminated, truncated, info = env.step("It is 19.")
        assert (reward, terminated, truncated) == (1.0, True, False), info
        env.close()
