"""OpenAIPolicy against a real OpenAI-compatible HTTP server on 127.0.0.1 that serves the tiny HF model."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("openai")

import gymnasium as gym

from gym_nemo.cli import main
from gym_nemo.policies import HFPolicy, OpenAIPolicy, SamplingParams

ENV = "nemo/CodeExec-v0"


class TinyChatServer:
    """A minimal ``/v1/chat/completions`` server over :class:`HFPolicy`; it stands in for vLLM's server.

    Like vLLM it applies the model's chat template (with ``tools``), samples, and returns the text, the
    chosen tokens' logprobs when ``logprobs`` is set (token strings as ``token_id:N``, as with vLLM's
    ``--return-tokens-as-token-ids``) and ``token_ids`` when ``return_token_ids`` is set. ``requests``
    logs every request body.
    """

    def __init__(self, policy: HFPolicy, *, tool_call: dict | None = None) -> None:
        self.policy, self.tool_call, self.requests = policy, tool_call, []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    self.send_error(404)
                    return
                data = json.dumps(server.reply(body)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def prompt_ids(self, body: dict) -> list[int]:
        tok = self.policy.tokenizer
        text = tok.apply_chat_template(
            body["messages"], tools=body.get("tools"), tokenize=False, add_generation_prompt=True
        )
        return tok.encode(text, add_special_tokens=False)

    def reply(self, body: dict) -> dict:
        self.requests.append(body)
        sampling = SamplingParams(
            max_tokens=body.get("max_tokens", 16),
            temperature=body.get("temperature", 1.0),
            top_p=body.get("top_p", 1.0),
            seed=body.get("seed"),
        )
        with self.lock:  # one generate at a time, as a single-engine server would
            gen = self.policy.generate([self.prompt_ids(body)], sampling)[0]
        message: dict = {"role": "assistant", "content": gen.text}
        if self.tool_call is not None:
            function = {"name": self.tool_call["name"], "arguments": json.dumps(self.tool_call["arguments"])}
            message["tool_calls"] = [{"id": "call_0", "type": "function", "function": function}]
        choice: dict = {"index": 0, "message": message, "finish_reason": gen.finish_reason, "logprobs": None}
        if body.get("logprobs"):
            content = [
                {"token": f"token_id:{t}", "logprob": lp, "bytes": None, "top_logprobs": []}
                for t, lp in zip(gen.token_ids, gen.logprobs, strict=True)
            ]
            choice["logprobs"] = {"content": content}
        if body.get("return_token_ids"):
            choice["token_ids"] = gen.token_ids
        return {"id": "cmpl-0", "object": "chat.completion", "created": 0, "model": body["model"], "choices": [choice]}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def hf(tiny_model_dir) -> HFPolicy:
    return HFPolicy(tiny_model_dir)


@pytest.fixture
def server(hf: HFPolicy):
    srv = TinyChatServer(hf)
    yield srv
    srv.close()


def _infos(n: int) -> list[dict]:
    env = gym.make(ENV, timeout_s=5)
    try:
        return [env.reset(seed=i)[1] for i in range(n)]
    finally:
        env.close()


def test_act_returns_the_served_models_text_ids_and_logprobs(hf: HFPolicy, server: TinyChatServer) -> None:
    policy = OpenAIPolicy("tiny", server.url, max_tokens=10, temperature=0.0, return_token_ids=True)
    infos = _infos(3)
    texts = policy.act(["ignored"] * 3, infos)
    assert len(texts) == 3 and len(server.requests) == 3
    for info, text, output in zip(infos, texts, policy.last_outputs, strict=True):
        request = next(r for r in server.requests if r["messages"] == info["messages"])
        assert request["tools"] == info["tools"] and request["model"] == "tiny" and request["max_tokens"] == 10
        expected = hf.generate([server.prompt_ids(request)], SamplingParams(max_tokens=10, temperature=0.0))[0]
        assert text == output.text == expected.text and output.finish_reason == expected.finish_reason
        assert output.token_ids == expected.token_ids
        assert output.logprobs == pytest.approx(expected.logprobs, abs=1e-5)


def test_token_data_only_when_the_server_returns_it(server: TinyChatServer) -> None:
    policy = OpenAIPolicy("tiny", server.url, max_tokens=6, temperature=0.0, logprobs=False)
    [text] = policy.act(["x"], _infos(1))
    [output] = policy.last_outputs
    assert "logprobs" not in server.requests[0] and "return_token_ids" not in server.requests[0]
    assert output.text == text and output.token_ids is None and output.logprobs is None


def test_structured_tool_calls_become_native_tool_call_text(hf: HFPolicy) -> None:
    call = {"name": "execute_python", "arguments": {"code": "print(6 * 7)"}}
    srv = TinyChatServer(hf, tool_call=call)
    try:
        policy = OpenAIPolicy("tiny", srv.url, max_tokens=4, temperature=0.0, logprobs=False)
        env = gym.make(ENV, timeout_s=5)
        try:
            _, info = env.reset(seed=0)
            [text] = policy.act(["x"], [info])
            assert text.endswith(f"<tool_call>\n{json.dumps(call)}\n</tool_call>")
            obs, _, terminated, truncated, info = env.step(text)
        finally:
            env.close()
        assert "42" in obs and not (terminated or truncated)  # the env ran the tool the server called
        assert info["messages"][-1]["role"] == "tool"
    finally:
        srv.close()


def test_cli_rollout_with_the_openai_policy(server: TinyChatServer, tmp_path, capsys) -> None:
    out = tmp_path / "openai.jsonl"
    argv = ["rollout", ENV, "--policy", "openai", "--model", "tiny", "--base-url", server.url]
    argv += ["--num-envs", "2", "--num-episodes", "4", "--max-tokens", "8", "--quiet", "--vectorization", "sync"]
    assert main([*argv, "--out", str(out), "--env-kwargs", '{"timeout_s": 5}']) == 0
    assert "wrote 4 episodes" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and len(server.requests) >= 4
    for row in rows:
        assert row["policy"] == "openai:tiny" and row["infra_error"] is None
        assistant = [m["content"] for m in row["messages"] if m["role"] == "assistant"]
        assert assistant and len(assistant) == row["num_turns"]
    assert all(r["max_tokens"] == 8 and r["model"] == "tiny" for r in server.requests)
    assert main(["rollout", ENV, "--policy", "openai", "--out", str(out)]) == 2  # no --model
