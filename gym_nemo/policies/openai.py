"""``OpenAIPolicy``: a text-level policy over any OpenAI-compatible chat endpoint (vLLM's server, a hosted API).

Each observation is answered with one ``chat.completions`` call on the env's chat so far
(``info["messages"]``) and its tool schemas (``info["tools"]``); the calls of a batch run concurrently.
The assistant's text is the action. Structured ``tool_calls`` in the reply are written back into the
text in the native form the env parses (``<tool_call>{"name": .., "arguments": ..}</tool_call>``), so
servers that parse tool calls out of the model's text and servers that do not both work.

Token ids and logprobs are kept only when the server returns them: ``logprobs=True`` asks for the chosen
tokens' logprobs; token ids come from vLLM's ``return_token_ids`` response field (requested with
``return_token_ids=True``, a vLLM extension hosted APIs reject) or from token strings of the form
``token_id:N`` (vLLM's ``--return-tokens-as-token-ids``). ``last_outputs`` holds them for the last batch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any


@dataclass
class ChatOutput:
    """One reply: the action text plus whatever token-level data the server returned (else None)."""

    text: str
    finish_reason: str | None
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    completion_tokens: int | None = None  # the server's ``usage.completion_tokens``, when it reports usage


class OpenAIPolicy:
    """A :class:`~gym_nemo.policies.base.TextPolicy` backed by an OpenAI-compatible chat completions endpoint.

    Args:
        model: the served model name.
        base_url: e.g. ``http://127.0.0.1:8000/v1``; default: the ``openai`` client's (``OPENAI_BASE_URL``).
        api_key: default ``OPENAI_API_KEY``, else ``"EMPTY"`` (local servers ignore it).
        max_tokens: the most tokens per reply (sent with every call, as are the next three settings).
        temperature: the sampling temperature.
        top_p: nucleus sampling's probability mass.
        seed: the sampling seed (servers that honour it, such as vLLM, repeat a call with it).
        logprobs: ask for the chosen tokens' logprobs.
        return_token_ids: ask for vLLM's ``return_token_ids`` (generated token ids) in the response.
        max_concurrency: calls in flight at once for a batch.
        timeout_s: the client's timeout per call.
        client: an ``openai.OpenAI`` client to use instead of building one.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        max_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        logprobs: bool = True,
        return_token_ids: bool = False,
        max_concurrency: int = 16,
        timeout_s: float = 600.0,
        client: Any | None = None,
    ) -> None:
        if client is None:
            from openai import OpenAI

            key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "EMPTY")
            client = OpenAI(base_url=base_url, api_key=key, timeout=timeout_s, max_retries=2)
        self.client = client
        self.model = model
        self.name = f"openai:{model}"
        self.max_tokens, self.temperature, self.top_p, self.seed = max_tokens, temperature, top_p, seed
        self.logprobs, self.return_token_ids = logprobs, return_token_ids
        self.max_concurrency = max(1, max_concurrency)
        #: The replies of the last ``act`` call, in order, with token ids/logprobs when the server sent them.
        self.last_outputs: list[ChatOutput] = []

    def complete(
        self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None
    ) -> ChatOutput:
        """One chat completion for ``messages`` (with ``tools``, if any)."""
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
        }
        if tools:
            kwargs["tools"] = [dict(t) for t in tools]
        if self.seed is not None:
            kwargs["seed"] = self.seed
        if self.logprobs:
            kwargs["logprobs"] = True
        if self.return_token_ids:
            kwargs["extra_body"] = {"return_token_ids": True}
        response = self.client.chat.completions.create(**kwargs)
        output = _output(response.choices[0])
        usage = getattr(response, "usage", None)
        if usage is not None and getattr(usage, "completion_tokens", None) is not None:
            output.completion_tokens = int(usage.completion_tokens)
        return output

    def act(self, observations: Sequence[str], infos: Sequence[Mapping[str, Any]]) -> list[str]:
        """One assistant message per env, from its ``info["messages"]`` and ``info["tools"]``."""
        jobs = [(info["messages"], info.get("tools")) for info in infos]
        if len(jobs) != len(observations):
            raise ValueError(f"{len(observations)} observations but {len(jobs)} infos")
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, max(1, len(jobs)))) as pool:
            self.last_outputs = list(pool.map(lambda job: self.complete(*job), jobs))
        return [o.text for o in self.last_outputs]


def _output(choice: Any) -> ChatOutput:
    """Text (with structured tool calls rendered natively) and any token-level data of one choice."""
    message = choice.message
    text = message.content or ""
    for call in getattr(message, "tool_calls", None) or []:
        try:
            arguments = json.loads(call.function.arguments or "{}")
        except json.JSONDecodeError:
            arguments = call.function.arguments
        body = json.dumps({"name": call.function.name, "arguments": arguments}, ensure_ascii=False)
        text += f"{chr(10) if text else ''}<tool_call>\n{body}\n</tool_call>"
    logprobs = token_ids = None
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if content:
        logprobs = [float(t.logprob) for t in content]
        if all(t.token.startswith("token_id:") for t in content):
            token_ids = [int(t.token.split(":", 1)[1]) for t in content]
    returned = getattr(choice, "token_ids", None)
    if returned is not None:
        token_ids = [int(t) for t in returned]
    return ChatOutput(text=text, finish_reason=choice.finish_reason, token_ids=token_ids, logprobs=logprobs)
