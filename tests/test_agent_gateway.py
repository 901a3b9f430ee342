"""The capturing gateway on loopback: OpenAI wire format, tool calls, streaming, per-run capture, errors and
faults (killed upstream, finished runs, 10 MB bodies, broken JSON), many concurrent runs."""

from __future__ import annotations

import concurrent.futures
import json

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("transformers")

from gym_nemo.agents import Gateway, PolicyBackend, UpstreamBackend, build_trajectory, play_run
from gym_nemo.agents.workflows import CALCULATOR_ROWS, CALCULATOR_TOOL, calculator_workflow
from gym_nemo.testing.scripted_policy import SCRIPTED_LOGPROB, ScriptedChatPolicy
from gym_nemo.testing.tiny_model import build_tokenizer
from tests.agent_helpers import sse_events, start_upstream

QUESTION = [{"role": "user", "content": "What is 6 * 7?"}]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer("chatml")


@pytest.fixture(scope="module")
def gateway(tokenizer):
    with Gateway(PolicyBackend(ScriptedChatPolicy(tokenizer)), max_body_bytes=4 * 1024 * 1024) as gw:
        yield gw


def test_a_workflow_run_becomes_one_token_exact_segment(gateway: Gateway, tokenizer) -> None:
    run = gateway.open_run()
    row = CALCULATOR_ROWS[0]
    assert calculator_workflow(row, run.base_url) == 1.0
    assert [c.finish_reason for c in run.calls] == ["tool_calls", "stop"]
    first = run.calls[0]
    assert first.request["tools"] == [CALCULATOR_TOOL] and first.request["messages"][1]["content"] == row["question"]
    record = build_trajectory(run.calls, reward=1.0, task_row=row, task_id=row["task_id"])
    assert len(record.segments) == 1 and record.breaks == []
    assert record.prompt_ids == first.prompt_ids
    ids = record.prompt_ids + record.completion_ids
    assert len(record.completion_ids) == len(record.completion_mask) == len(record.completion_logprobs)
    for call in run.calls:  # every completion is in the record verbatim, as policy tokens
        start = len(call.prompt_ids) - len(record.prompt_ids)
        assert record.completion_ids[start : start + len(call.completion_ids)] == call.completion_ids
        assert set(record.completion_mask[start : start + len(call.completion_ids)]) == {1}
        assert ids[: len(call.prompt_ids)] == call.prompt_ids
    policy_lps = [lp for lp, m in zip(record.completion_logprobs, record.completion_mask, strict=True) if m]
    assert policy_lps == [SCRIPTED_LOGPROB] * sum(record.completion_mask)
    final_chat = [*run.calls[-1].request["messages"], run.calls[-1].response]
    rendered = tokenizer.apply_chat_template(final_chat, tools=[CALCULATOR_TOOL], tokenize=False)
    assert tokenizer.decode(ids, skip_special_tokens=False) + "\n" == rendered
    row_json = json.loads(json.dumps(record.to_row()))
    assert row_json["segments"][0]["calls"] == [0, 1] and row_json["breaks"] == [] and row_json["reward"] == 1.0


def test_openai_client_tool_calls_and_streaming(gateway: Gateway) -> None:
    openai = pytest.importorskip("openai")
    run = gateway.open_run()
    client = openai.OpenAI(base_url=run.base_url, api_key="none", max_retries=0)
    assert [m.id for m in client.models.list()] == ["scripted"]
    reply = client.chat.completions.create(model="m", messages=QUESTION, tools=[CALCULATOR_TOOL])
    call = reply.choices[0].message.tool_calls[0]
    assert reply.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "calculate" and json.loads(call.function.arguments) == {"expression": "6 * 7"}
    stream = client.chat.completions.create(
        model="m", messages=QUESTION, tools=[CALCULATOR_TOOL], stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    streamed = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert streamed[0].function.name == "calculate" and json.loads(streamed[0].function.arguments)["expression"]
    assert chunks[-1].usage.completion_tokens == len(run.calls[1].completion_ids) > 0
    assert run.calls[1].request["stream"] is True and run.calls[1].completion_ids == run.calls[0].completion_ids
    logprobs = client.chat.completions.create(model="m", messages=QUESTION, logprobs=True)
    assert [t.logprob for t in logprobs.choices[0].logprobs.content] == run.calls[2].logprobs


def test_completions_endpoint_with_text_and_ids(gateway: Gateway, tokenizer) -> None:
    run = gateway.open_run()
    text = httpx.post(f"{run.base_url}/completions", json={"prompt": "What is 1 + 1?", "max_tokens": 64}).json()
    ids = tokenizer.encode("What is 1 + 1?", add_special_tokens=False)
    by_ids = httpx.post(f"{run.base_url}/completions", json={"prompt": ids, "max_tokens": 64}).json()
    assert text["object"] == "text_completion" and text["choices"][0]["text"] == by_ids["choices"][0]["text"]
    assert run.calls[0].prompt_ids == run.calls[1].prompt_ids == ids
    streamed = sse_events(httpx.post(f"{run.base_url}/completions", json={"prompt": ids, "stream": True}).text)
    assert streamed[-1] == "[DONE]" and streamed[-2]["choices"][0]["token_ids"] == run.calls[2].completion_ids


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{broken", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (json.dumps({"messages": []}).encode(), 400, "invalid_request"),
        (json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(), 400, "invalid_request"),
        (json.dumps({"messages": QUESTION, "n": 3}).encode(), 400, "invalid_request"),
        (json.dumps({"messages": QUESTION, "temperature": "hot"}).encode(), 400, "invalid_request"),
        (json.dumps({"messages": QUESTION, "max_tokens": 0}).encode(), 400, "invalid_request"),
        (
            json.dumps({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}).encode(),
            400,
            "invalid_request",
        ),
        (b"x" * (10 * 1024 * 1024), 413, "body_too_large"),
    ],
)
def test_malformed_requests_get_openai_errors_and_the_run_goes_on(
    gateway: Gateway, body: bytes, status: int, code: str
) -> None:
    run = gateway.open_run()
    reply = httpx.post(f"{run.base_url}/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert reply.status_code == status
    error = reply.json()["error"]
    assert error["code"] == code and error["type"] == "invalid_request_error" and error["message"]
    assert run.calls == [] and run.errors[0]["status"] == status
    ok = httpx.post(f"{run.base_url}/chat/completions", json={"messages": QUESTION})
    assert ok.status_code == 200 and len(run.calls) == 1


def test_unknown_and_finished_runs(gateway: Gateway) -> None:
    missing = httpx.post(f"{gateway.url}/runs/nope/v1/chat/completions", json={"messages": QUESTION})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "run_not_found"
    bare = httpx.post(f"{gateway.url}/v1/chat/completions", json={"messages": QUESTION})
    assert bare.status_code == 404 and "/runs/{run_id}/v1" in bare.json()["error"]["message"]
    run = gateway.open_run()
    assert httpx.post(f"{run.base_url}/chat/completions", json={"messages": QUESTION}).status_code == 200
    gateway.finish_run(run.run_id)
    late = httpx.post(f"{run.base_url}/chat/completions", json={"messages": QUESTION})
    assert late.status_code == 410 and late.json()["error"]["code"] == "run_finished" and len(run.calls) == 1
    assert httpx.get(f"{gateway.url}/runs/{run.run_id}/calls").json()["finished"] is True
    gateway.pop_run(run.run_id)
    assert httpx.post(f"{run.base_url}/chat/completions", json={"messages": QUESTION}).status_code == 404


def test_health_unknown_paths_methods_and_a_chunked_body(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/health").json()["status"] == "ok"
    assert httpx.get(f"{gateway.url}/nowhere").status_code == 404
    run = gateway.open_run()
    assert httpx.get(f"{run.base_url}/chat/completions").status_code == 405
    assert httpx.post(f"{run.base_url}/embeddings", json={}).status_code == 404
    body = json.dumps({"messages": QUESTION}).encode()
    reply = httpx.post(f"{run.base_url}/chat/completions", content=iter([body[:9], body[9:]]))  # chunked
    assert reply.status_code == 200 and run.calls[0].request["messages"] == QUESTION


def test_many_concurrent_runs_lose_nothing(gateway: Gateway) -> None:
    runs = [gateway.open_run() for _ in range(48)]
    rows = [CALCULATOR_ROWS[i % len(CALCULATOR_ROWS)] for i in range(len(runs))]
    with concurrent.futures.ThreadPoolExecutor(48) as pool:
        scores = list(pool.map(lambda rr: calculator_workflow(rr[1], rr[0].base_url), zip(runs, rows, strict=True)))
    assert scores == [1.0] * len(runs)
    for run, row in zip(runs, rows, strict=True):
        assert len(run.calls) == 2 and row["question"] in run.calls[0].request["messages"][1]["content"]
        assert len(build_trajectory(run.calls).segments) == 1


def test_upstream_backend_captures_ids_and_survives_a_killed_upstream(gateway: Gateway) -> None:
    proc, upstream_url = start_upstream()
    try:
        with Gateway(UpstreamBackend(upstream_url, "scripted", timeout_s=30)) as front:
            run = front.open_run()
            assert calculator_workflow(CALCULATOR_ROWS[1], run.base_url) == 1.0
            record = build_trajectory(run.calls, reward=1.0)
            assert [c.finish_reason for c in run.calls] == ["tool_calls", "stop"]
            assert all(c.prompt_ids and c.completion_ids and c.logprobs for c in run.calls)
            assert len(record.segments) == 1 and record.breaks == []
            streamed = sse_events(
                httpx.post(f"{run.base_url}/chat/completions", json={"messages": QUESTION, "stream": True}).text
            )
            assert streamed[-2]["choices"][0]["token_ids"] == run.calls[-1].completion_ids
            proc.kill()
            proc.wait(10)
            dead = httpx.post(f"{run.base_url}/chat/completions", json={"messages": QUESTION}, timeout=30)
            assert dead.status_code == 502 and dead.json()["error"]["code"] == "upstream_error"
            assert "upstream policy server" in dead.json()["error"]["message"]
            other = gateway.open_run()  # runs on other backends go on
            assert calculator_workflow(CALCULATOR_ROWS[2], other.base_url) == 1.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_failing_policy_answers_502_not_a_hang(tokenizer) -> None:
    class Broken(ScriptedChatPolicy):
        def generate(self, prompts, sampling):
            raise RuntimeError("CUDA out of memory (simulated)")

    with Gateway(PolicyBackend(Broken(tokenizer))) as gw:
        run = gw.open_run()
        reply = httpx.post(f"{run.base_url}/chat/completions", json={"messages": QUESTION}, timeout=30)
        assert reply.status_code == 502 and "out of memory" in reply.json()["error"]["message"]
        assert run.calls == [] and run.errors[0]["status"] == 502


def test_play_run_records_scores_and_infra_errors(gateway: Gateway) -> None:
    row = CALCULATOR_ROWS[3]
    record = play_run(gateway, calculator_workflow, row, policy="scripted", group=7)
    assert (record.reward, record.terminated, record.infra_error, record.task_id, record.group) == (
        1.0,
        True,
        None,
        "calc-3",
        7,
    )
    assert record.num_turns == 2 and len(record.segments) == 1 and record.task_row == row

    def crashes_after_a_call(task, base_url):
        calculator_workflow(task, base_url)
        raise TimeoutError("the agent's tool server timed out")

    failed = play_run(gateway, crashes_after_a_call, row)
    assert failed.truncated and not failed.terminated and failed.reward == 0.0 and failed.step_rewards == []
    assert "TimeoutError: the agent's tool server timed out" in failed.infra_error and failed.num_turns == 2

    def hangs(task, base_url):
        import time

        time.sleep(3)
        return 1.0

    slow = play_run(gateway, hangs, row, timeout_s=0.3)
    assert slow.truncated and "timeout_s=0.3" in slow.infra_error and slow.segments == []
    assert not [r for r in gateway.runs.values() if r.metadata.get("task_id") == "calc-3"]  # runs are removed
