"""The OpenAI wire format of the capturing gateway: request validation, captured calls, response bodies.

Requests are validated by hand (plain ``json`` and dict checks, no pydantic models): the gateway sits on
every LLM call of every agent run, and a schema library's per-request cost would be most of its
overhead. A request the gateway cannot serve raises :class:`APIError`, which the app answers with
OpenAI's error body ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from gym_nemo.core.tool_calls import parse_tool_calls


class APIError(Exception):
    """A request the gateway refuses, answered with ``status`` and OpenAI's error body."""

    def __init__(self, status: int, message: str, *, code: str = "invalid_request", param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def body(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Sampling:
    """The sampling settings of one request, as the agent sent them (``None``: not set)."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class ChatRequest:
    """One validated request: ``kind`` is ``"chat"`` (messages) or ``"completion"`` (prompt text or ids)."""

    kind: str
    model: str
    sampling: Sampling
    messages: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    prompt: str | list[int] | None = None
    stream: bool = False
    include_usage: bool = False
    logprobs: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class Completion:
    """What a backend produced for one request: the text, and the token-level data when it has them."""

    text: str
    finish_reason: str
    prompt_ids: list[int] | None = None
    completion_ids: list[int] | None = None
    logprobs: list[float] | None = None
    prompt_text: str | None = None
    completion_text: str | None = None  # the completion ids decoded with special tokens (a stop token included)
    tool_calls: list[dict[str, Any]] | None = None  # set by backends whose upstream already parsed them
    tokens: list[str] | None = None  # the completion's token strings, for OpenAI ``logprobs`` bodies


@dataclass
class CallRecord:
    """One captured LLM call of a run: the request, the ids and logprobs, and the reply the agent got."""

    index: int
    run_id: str
    kind: str
    request: dict[str, Any]
    prompt_ids: list[int] | None
    completion_ids: list[int] | None
    logprobs: list[float] | None
    finish_reason: str
    response: dict[str, Any]
    prompt_text: str | None = None
    completion_text: str | None = None
    started: float = 0.0
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _number(body: dict[str, Any], key: str, kind: type, lo: float | None = None, hi: float | None = None) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise APIError(400, f"{key!r} must be {'an integer' if kind is int else 'a number'}", param=key)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise APIError(400, f"{key!r} must be in [{lo}, {hi}], got {value}", param=key)
    return kind(value)


def _content_text(content: Any, where: str) -> str | None:
    """A message's content as text: a string, null, or a list of ``{"type": "text", "text": ...}`` parts."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise APIError(400, f"{where}: only text content parts are supported", param="messages")
            parts.append(part["text"])
        return "".join(parts)
    raise APIError(400, f"{where}: 'content' must be a string, null or a list of text parts", param="messages")


def _messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise APIError(400, "'messages' must be a non-empty list of message objects", param="messages")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise APIError(400, f"messages[{i}] must be an object with a string 'role'", param="messages")
        if message["role"] not in ("system", "developer", "user", "assistant", "tool"):
            raise APIError(400, f"messages[{i}]: unknown role {message['role']!r}", param="messages")
        clean = {k: v for k, v in message.items() if v is not None}
        clean["content"] = _content_text(message.get("content"), f"messages[{i}]") or ""
        if clean["role"] == "developer":
            clean["role"] = "system"
        messages.append(clean)
    return messages


def parse_request(raw: bytes, kind: str) -> ChatRequest:
    """Validate a ``/chat/completions`` (``kind="chat"``) or ``/completions`` body; raise :class:`APIError`."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    if body.get("n") not in (None, 1):
        raise APIError(400, "'n' > 1 is not supported: send one request per sample", param="n")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise APIError(400, "'stop' must be a string or a list of strings", param="stop")
    max_tokens = _number(body, "max_completion_tokens", int, 1) or _number(body, "max_tokens", int, 1)
    sampling = Sampling(
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", float, 0, 2),
        top_p=_number(body, "top_p", float, 0, 1),
        seed=_number(body, "seed", int),
        stop=stop or None,
    )
    stream_options = body.get("stream_options") or {}
    request = ChatRequest(
        kind=kind,
        model=str(body.get("model") or ""),
        sampling=sampling,
        stream=bool(body.get("stream")),
        include_usage=bool(isinstance(stream_options, dict) and stream_options.get("include_usage")),
        logprobs=bool(body.get("logprobs")),
        raw=body,
    )
    if kind == "chat":
        request.messages = _messages(body.get("messages"))
        tools = body.get("tools")
        if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
            raise APIError(400, "'tools' must be a list of tool objects", param="tools")
        request.tools = tools or None
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
            prompt = prompt[0]
        ok_ids = isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt)
        if not (isinstance(prompt, str) and prompt) and not ok_ids:
            raise APIError(400, "'prompt' must be a non-empty string or list of token ids (one prompt)", param="prompt")
        request.prompt = prompt
    return request


def request_summary(request: ChatRequest) -> dict[str, Any]:
    """What a call record keeps of the request: messages or prompt, tools, sampling, stream."""
    summary: dict[str, Any] = {"model": request.model, "sampling": request.sampling.to_dict(), "stream": request.stream}
    if request.kind == "chat":
        summary["messages"] = request.messages
        if request.tools:
            summary["tools"] = request.tools
    else:
        summary["prompt"] = request.prompt
    return summary


def assistant_message(completion: Completion) -> dict[str, Any]:
    """The assistant message of a chat reply: tool calls in OpenAI's structured form when the text has any.

    Calls are parsed with :func:`gym_nemo.core.tool_calls.parse_tool_calls` (Hermes ``<tool_call>`` tags or
    a whole-message JSON call); the text before the first call stays the content. A backend whose upstream
    already returned structured calls keeps them.
    """
    if completion.tool_calls:
        return {"role": "assistant", "content": completion.text or None, "tool_calls": completion.tool_calls}
    parsed = parse_tool_calls(completion.text)
    if not parsed.calls:
        return {"role": "assistant", "content": completion.text}
    head = completion.text.split("<tool_call>", 1)[0].rstrip() if "<tool_call>" in completion.text else ""
    calls = [
        {
            "id": f"call_{secrets.token_hex(8)}",
            "type": "function",
            "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)},
        }
        for c in parsed.calls
    ]
    return {"role": "assistant", "content": head or None, "tool_calls": calls}


def _logprobs_body(completion: Completion) -> dict[str, Any] | None:
    if completion.logprobs is None:
        return None
    tokens = completion.tokens or [""] * len(completion.logprobs)
    return {
        "content": [
            {"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": []}
            for t, lp in zip(tokens, completion.logprobs, strict=False)
        ]
    }


def response_body(request: ChatRequest, completion: Completion, call_id: str, model: str) -> dict[str, Any]:
    """The non-streaming reply, with vLLM's ``prompt_token_ids`` / ``token_ids`` fields added."""
    usage = {
        "prompt_tokens": len(completion.prompt_ids or ()),
        "completion_tokens": len(completion.completion_ids or ()),
    }
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    choice: dict[str, Any] = {
        "index": 0,
        "finish_reason": completion.finish_reason,
        "token_ids": completion.completion_ids,
    }
    if request.kind == "chat":
        message = assistant_message(completion)
        choice["message"] = message
        if message.get("tool_calls") and completion.finish_reason == "stop":
            choice["finish_reason"] = "tool_calls"
        choice["logprobs"] = _logprobs_body(completion) if request.logprobs else None
        obj = "chat.completion"
    else:
        choice["text"] = completion.text
        choice["logprobs"] = (
            {"tokens": completion.tokens, "token_logprobs": completion.logprobs}
            if request.logprobs and completion.logprobs is not None
            else None
        )
        obj = "text_completion"
    return {
        "id": call_id,
        "object": obj,
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": usage,
        "prompt_token_ids": completion.prompt_ids,
    }


def stream_events(request: ChatRequest, body: dict[str, Any]) -> list[bytes]:
    """The reply as server-sent events (``stream: true``): role, content, tool calls, finish, usage, ``[DONE]``.

    The backend has the whole completion before the first byte goes out, so the events carry it in a few
    chunks; the ids are in the final chunk (``token_ids``, ``prompt_token_ids``) and in the call record.
    """
    base = {k: body[k] for k in ("id", "created", "model")}
    choice = body["choices"][0]
    chunks: list[dict[str, Any]] = []
    if request.kind == "chat":
        base["object"] = "chat.completion.chunk"
        message = choice["message"]
        chunks.append({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None})
        if message.get("content"):
            delta = {"content": message["content"]}
            chunks.append({"index": 0, "delta": delta, "logprobs": choice.get("logprobs"), "finish_reason": None})
        for i, call in enumerate(message.get("tool_calls") or []):
            chunks.append({"index": 0, "delta": {"tool_calls": [dict(call, index=i)]}, "finish_reason": None})
        final = {"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}
    else:
        base["object"] = "text_completion"
        chunks.append({"index": 0, "text": choice["text"], "logprobs": choice.get("logprobs"), "finish_reason": None})
        final = {"index": 0, "text": "", "finish_reason": choice["finish_reason"]}
    final["token_ids"] = choice["token_ids"]
    events = [dict(base, choices=[c]) for c in chunks]
    events.append(dict(base, choices=[final], prompt_token_ids=body["prompt_token_ids"]))
    if request.include_usage:
        events.append(dict(base, choices=[], usage=body["usage"]))
    out = [b"data: " + json.dumps(e, ensure_ascii=False).encode() + b"\n\n" for e in events]
    out.append(b"data: [DONE]\n\n")
    return out
