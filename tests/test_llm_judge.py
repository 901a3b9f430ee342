"""The LLM judge through the real openai client, against a tiny OpenAI-compatible HTTP server on 127.0.0.1.

The server stands in for a judge model: it answers ``POST /v1/chat/completions`` with a canned chat
completion whose text is chosen per request (see ``JudgeServer.reply``), and records what it was sent.
Judge failures (closed port, server error, timeout, a reply without a verdict label) must be infrastructure
errors, never a reward of 0.
"""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import gymnasium as gym
import pytest

import gym_nemo  # noqa: F401  (registers the envs)
from gym_nemo.core.errors import InfraError
from gym_nemo.verifiers.llm_judge import EQUAL_LABEL, NOT_EQUAL_LABEL, LLMJudge, parse_judgment

try:
    import openai  # noqa: F401
except ImportError:  # pragma: no cover - the [judge] extra is installed by scripts/test.sh
    print("LLM judge tests skipped: the openai client is not installed (pip install 'gym-nemo[judge]')")
    pytest.skip("openai is not installed (the [judge] extra)", allow_module_level=True)


class JudgeServer:
    """A minimal OpenAI-compatible chat-completions endpoint; ``reply(messages) -> (status, text)``."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.reply = lambda messages: (200, f"They match. {EQUAL_LABEL}")
        self.delay_s = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server names the handler method so
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "body": body})
                time.sleep(server.delay_s)
                status, text = server.reply(body["messages"])
                payload = {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
                if status != 200:
                    payload = {"error": {"message": text, "type": "server_error"}}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that timed out and hung up is expected here

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = JudgeServer()
    yield s
    s.close()


def judge_config(server: JudgeServer, **overrides) -> dict:
    return {"base_url": server.base_url, "model": "judge-model", "api_key": "test", "max_retries": 0, **overrides}


def test_parse_judgment() -> None:
    assert parse_judgment(f"... {EQUAL_LABEL}") is True
    assert parse_judgment(f"... {NOT_EQUAL_LABEL}") is False
    assert parse_judgment(f"{NOT_EQUAL_LABEL} no wait {EQUAL_LABEL}") is False  # the first label counts
    assert parse_judgment("I cannot decide") is None


def test_judge_asks_both_orders_and_both_must_agree(server) -> None:
    judge = LLMJudge(judge_config(server))
    equal, evaluations = judge.equivalent("What is half?", "1/2", "one half")
    assert equal and len(evaluations) == 2
    first, second = (r["body"]["messages"][1]["content"] for r in server.requests)
    assert first.index("1/2") < first.index("one half") and second.index("one half") < second.index("1/2")
    assert server.requests[0]["path"] == "/v1/chat/completions" and server.requests[0]["body"]["model"] == "judge-model"

    # position bias: equal in one order only -> not equivalent
    server.reply = lambda messages: (200, EQUAL_LABEL if "A\n1/2" in messages[1]["content"] else NOT_EQUAL_LABEL)
    equal, evaluations = judge.equivalent("q", "1/2", "0.6")
    assert not equal and len(evaluations) == 2
    judge.close()


def test_math_env_uses_the_judge_only_where_math_verify_says_no(server) -> None:
    env = gym.make("nemo/Math-v0", sources=["mmath"], judge=judge_config(server))
    try:
        env.reset(options={"task_id": "mmath/AIME2024/0"})
        _, r, *_ = env.step("\\boxed{204}")  # math-verify decides; the judge is not asked
        assert r == 1.0 and server.requests == []

        env.reset(options={"task_id": "mmath/AIME2024/0"})
        _, r, _, _, info = env.step("\\boxed{\\text{two hundred and four}}")  # math-verify can't; the judge can
        assert r == 1.0 and len(server.requests) == 2
        assert info["verdict"]["details"]["library_reward"] == 0.0
        assert len(info["verdict"]["details"]["judge_evaluations"]) == 2
        assert "two hundred and four" in server.requests[0]["body"]["messages"][1]["content"]
        assert env.unwrapped.versions()["verifier"].startswith("math_verify+llm_judge@")

        server.reply = lambda messages: (200, f"Different. {NOT_EQUAL_LABEL}")
        env.reset(options={"task_id": "mmath/AIME2024/0"})
        _, r, terminated, truncated, _ = env.step("\\boxed{205}")
        assert (r, terminated, truncated) == (0.0, True, False)

        env.reset(options={"task_id": "mmath/AIME2024/0"})
        _, r, *_ = env.step("no boxed answer")  # no answer math-verify can read: the judge sees the whole text
        assert r == 0.0 and len(server.requests) == 4  # as NeMo Gym; "different" in the first order ends it
        assert "no boxed answer" in server.requests[3]["body"]["messages"][1]["content"]
    finally:
        env.close()


@pytest.mark.parametrize("failure", ["no label", "server error", "timeout"])
def test_judge_failures_are_infra_errors_not_zero(server, failure: str) -> None:
    if failure == "no label":
        server.reply = lambda messages: (200, "Hmm, hard to say.")
    elif failure == "server error":
        server.reply = lambda messages: (500, "model crashed")
    else:
        server.delay_s = 2.0
    env = gym.make("nemo/Math-v0", sources=["mmath"], judge=judge_config(server, timeout_s=0.5))
    try:
        env.reset(options={"task_id": "mmath/AIME2024/0"})
        _, r, terminated, truncated, info = env.step("\\boxed{205}")
        assert (r, terminated, truncated) == (0.0, False, True)
        assert info["infra_error"].startswith("LLM judge:")
        assert "verdict" in info and info["verdict"]["infra_error"] is not None
    finally:
        env.close()


def test_closed_port_is_an_infra_error() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    judge = LLMJudge({"base_url": f"http://127.0.0.1:{port}/v1", "model": "m", "max_retries": 0, "timeout_s": 2})
    with pytest.raises(InfraError, match="APIConnectionError"):
        judge.equivalent("q", "1", "2")
    judge.close()
