"""The LLM judge a NeMo Gym server asks, served by gym_nemo: ``judge=`` of ``nemo/NeMoGym-v0``.

NeMo Gym's judge servers (simpleqa, equivalence_llm_judge, inverse_if, ...) score an answer by posting a prompt
to a *model server* their config names (``judge_model_server``), at ``/v1/responses`` or
``/v1/chat/completions``. Without NeMo Gym's head server there is no such server to look up, so gym_nemo runs
one: :class:`JudgeServer`, a small loopback HTTP server in the env's process that answers both routes with
a judge function ``(messages) -> text``. The server process is started with its model-server names pointing
at it (``start_server(..., model_url=...)``).

The env's ``judge=`` is either an OpenAI-compatible endpoint (``{"base_url": ..., "model": ...}``, asked
through :class:`~gym_nemo.verifiers.llm_judge.LLMJudge` as ``nemo/Math-v0``'s ``judge=`` is: vLLM's server,
gym_nemo's agent gateway in front of an HF policy, a hosted API) or any callable
``judge(messages: list[dict]) -> str`` (chat messages with ``role``/``content``), e.g.
:class:`~gym_nemo.testing.nemo_gym_coverage.RecordedJudge`, which answers with the judge texts NeMo Gym stored
in a rollout (how the coverage test replays judge servers on a machine that cannot run their 100B+ judges).

A judge that fails answers HTTP 500 (NeMo Gym's OpenAI client retries a 500 twice, and a 502 forever: a
rate limit to it); the NeMo Gym server then fails its ``/verify`` (an infrastructure error for the env, never
a reward) or, where its code catches judge failures, scores as NeMo Gym does.

>>> server = JudgeServer(lambda messages: "[[A=B]]")
>>> import httpx
>>> reply = httpx.post(server.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "?"}]})
>>> reply.json()["choices"][0]["message"]["content"]
'[[A=B]]'
>>> server.close()
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gym_nemo.core.responses import transcript_to_response

JudgeFn = Callable[[list[dict[str, str]]], str]


def request_messages(body: Mapping[str, Any]) -> list[dict[str, str]]:
    """The chat messages of a ``/v1/chat/completions`` or ``/v1/responses`` request body, content as text
    (instructions as a system message; text parts joined; images and other parts dropped)."""
    items = body.get("messages") if "messages" in body else body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    messages = [{"role": "system", "content": str(body["instructions"])}] if body.get("instructions") else []
    for item in items or []:
        if not isinstance(item, Mapping) or item.get("type", "message") != "message":
            continue
        content = item.get("content")
        if isinstance(content, list):
            content = "".join(str(p.get("text") or "") for p in content if isinstance(p, Mapping))
        messages.append({"role": str(item.get("role") or "user"), "content": str(content or "")})
    return messages


def _chat_completion(text: str, model: str) -> dict[str, Any]:
    """A chat completion of ``text``; its id is the text's digest and ``created`` 0 (as the Responses objects
    of :func:`transcript_to_response`), so a verdict's details are the same for the same judgment."""
    return {
        "id": f"chatcmpl-{hashlib.sha256(text.encode()).hexdigest()[:24]}",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
    }


def _response(text: str, model: str) -> dict[str, Any]:
    response = transcript_to_response([{"role": "assistant", "content": text}], model=model)
    response.update(parallel_tool_calls=False, tool_choice="none", tools=[])
    return response


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    disable_nagle_algorithm = True  # headers and body are separate writes: no delayed-ACK wait between them
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        route = self.path.split("?", 1)[0]
        if route not in ("/v1/responses", "/v1/chat/completions"):
            return self._send(404, {"error": {"message": f"no route {route}", "type": "not_found"}})
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            messages = request_messages(body)
        except (ValueError, AttributeError) as exc:
            return self._send(400, {"error": {"message": f"bad request body: {exc}", "type": "invalid_request"}})
        try:
            text = self.server.judge(messages)
        except Exception as exc:  # the judge's failure is the caller's infrastructure error, not a verdict
            return self._send(500, {"error": {"message": f"judge failed: {type(exc).__name__}: {exc}"}})
        self.server.calls += 1
        model = str(body.get("model") or "gym_nemo-judge")
        reply = _response(text, model) if route == "/v1/responses" else _chat_completion(text, model)
        self._send(200, reply)

    def _send(self, status: int, payload: Mapping[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    judge: JudgeFn
    calls: int


class JudgeServer:
    """A loopback model server (``/v1/responses``, ``/v1/chat/completions``) whose every answer is
    ``judge(messages)``; its :attr:`url` is what a NeMo Gym server's ``judge_model_server`` points at."""

    def __init__(self, judge: JudgeFn) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.judge = judge
        self._server.calls = 0
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="nemo-gym-judge", daemon=True)
        self._thread.start()

    @property
    def calls(self) -> int:
        """How many requests the judge has answered."""
        return self._server.calls

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
