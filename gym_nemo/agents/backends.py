"""What answers the gateway's calls: an in-process :class:`~gym_nemo.policies.token.TokenPolicy`, or any
OpenAI-compatible upstream (vLLM with ``return_token_ids``).

:class:`PolicyBackend` renders each chat with the tokenizer's chat template and generates from the ids.
When a call's rendered prompt starts with the text of an earlier call of the same run (its prompt and
completion), it reuses that call's ids verbatim and tokenizes only the rest, as
:class:`~gym_nemo.wrappers.TokenEnv` does: the model's sampled ids are never re-tokenized, so an agent that
keeps its history yields one token-exact segment. Calls waiting at the same time are batched into one
``generate`` per sampling setting, on a worker thread (the gateway's event loop never blocks on the model).

:class:`UpstreamBackend` forwards the request (non-streaming, with ``logprobs`` and vLLM's
``return_token_ids`` forced on) and takes the ids and logprobs from the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from gym_nemo.agents.calls import APIError, ChatRequest, Completion
from gym_nemo.policies.token import SamplingParams, TokenPolicy


@runtime_checkable
class Backend(Protocol):
    """Answers one validated request of a run (``state`` is the run's private dict for this backend)."""

    name: str

    async def complete(self, request: ChatRequest, state: dict[str, Any]) -> Completion: ...

    async def aclose(self) -> None: ...


@dataclass
class _Job:
    request: ChatRequest
    state: dict[str, Any]
    future: asyncio.Future[Completion]
    loop: asyncio.AbstractEventLoop


class PolicyBackend:
    """A :class:`TokenPolicy` behind the gateway (see the module docstring).

    Args:
        policy: e.g. :class:`~gym_nemo.policies.hf.HFPolicy` or :class:`~gym_nemo.policies.vllm.VLLMPolicy`.
        tokenizer: default ``policy.tokenizer``.
        chat_template: overrides the tokenizer's template.
        template_kwargs: extra template variables (e.g. ``{"enable_thinking": False}``).
        max_tokens: the cap of a request that sets none, and of every request.
        name: the model name ``/v1/models`` lists; default ``policy.name``.
    """

    def __init__(
        self,
        policy: TokenPolicy,
        tokenizer: Any | None = None,
        *,
        chat_template: str | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
        max_tokens: int = 512,
        name: str | None = None,
    ) -> None:
        self.policy = policy
        self.tokenizer = tokenizer if tokenizer is not None else getattr(policy, "tokenizer", None)
        if self.tokenizer is None:
            raise ValueError("the policy has no .tokenizer; pass tokenizer=")
        self.chat_template = chat_template
        self.template_kwargs = dict(template_kwargs or {})
        self.max_tokens = max_tokens
        self.name = name or policy.name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._serve, name="gateway-policy", daemon=True)
        self._worker.start()

    async def complete(self, request: ChatRequest, state: dict[str, Any]) -> Completion:
        loop = asyncio.get_running_loop()
        job = _Job(request, state, loop.create_future(), loop)
        self._jobs.put(job)
        return await job.future

    async def aclose(self) -> None:
        self._jobs.put(None)

    # ------------------------------------------------------------------ the worker thread
    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            jobs = [job]
            with contextlib.suppress(queue.Empty):
                while len(jobs) < 256:
                    more = self._jobs.get_nowait()
                    if more is None:
                        self._jobs.put(None)
                        break
                    jobs.append(more)
            self._run_batch(jobs)

    def _run_batch(self, jobs: list[_Job]) -> None:
        groups: dict[SamplingParams, list[tuple[_Job, list[int], str]]] = {}
        for job in jobs:
            try:
                ids, text = self._prompt(job.request, job.state)
                groups.setdefault(self._sampling(job.request), []).append((job, ids, text))
            except Exception as exc:  # a template or tokenizer failure is this request's, not the batch's
                _resolve(job, exc=APIError(400, f"could not render the request: {type(exc).__name__}: {exc}"))
        for sampling, members in groups.items():
            try:
                generations = self.policy.generate([ids for _, ids, _ in members], sampling)
            except Exception as exc:
                for job, _, _ in members:
                    _resolve(
                        job, exc=APIError(502, f"the policy failed: {type(exc).__name__}: {exc}", code="policy_error")
                    )
                continue
            for (job, ids, text), gen in zip(members, generations, strict=True):
                completion_text = self._decode(gen.token_ids)
                completion = Completion(
                    text=gen.text,
                    finish_reason=gen.finish_reason,
                    prompt_ids=ids,
                    completion_ids=list(gen.token_ids),
                    logprobs=[float(x) for x in gen.logprobs],
                    prompt_text=text,
                    completion_text=completion_text,
                )
                if job.request.logprobs:
                    completion.tokens = [self._decode([t]) for t in gen.token_ids]
                contexts, context = job.state.setdefault("contexts", {}), text + completion_text
                if context not in contexts:  # text -> ids; a repeated text keeps its first ids
                    contexts[context] = ids + gen.token_ids
                _resolve(job, completion)

    def _sampling(self, request: ChatRequest) -> SamplingParams:
        s = request.sampling
        return SamplingParams(
            max_tokens=min(s.max_tokens or self.max_tokens, self.max_tokens),
            temperature=1.0 if s.temperature is None else s.temperature,
            top_p=1.0 if s.top_p is None or s.top_p == 0 else s.top_p,
            seed=s.seed,
        )

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _prompt(self, request: ChatRequest, state: dict[str, Any]) -> tuple[list[int], str]:
        """The prompt's ids and text; an earlier call's ids are reused when its text is a prefix."""
        if request.kind == "completion":
            if isinstance(request.prompt, list):
                return list(request.prompt), self._decode(list(request.prompt))
            text = str(request.prompt)
        else:
            text = self.tokenizer.apply_chat_template(
                request.messages,
                tools=request.tools,
                chat_template=self.chat_template,
                add_generation_prompt=True,
                tokenize=False,
                **self.template_kwargs,
            )
        contexts: dict[str, list[int]] = state.get("contexts", {})
        best = max((c for c in contexts if text.startswith(c)), key=len, default=None)
        if best is None:
            return self._encode(text), text
        return contexts[best] + self._encode(text[len(best) :]), text


def _resolve(job: _Job, completion: Completion | None = None, *, exc: BaseException | None = None) -> None:
    def settle() -> None:
        if job.future.done():
            return
        if exc is not None:
            job.future.set_exception(exc)
        else:
            job.future.set_result(completion)  # type: ignore[arg-type]

    job.loop.call_soon_threadsafe(settle)


class UpstreamBackend:
    """An OpenAI-compatible server behind the gateway (vLLM: ``return_token_ids`` gives the ids).

    Args:
        base_url: the upstream's ``/v1`` URL, e.g. ``http://127.0.0.1:8000/v1``.
        model: the upstream model every request is sent to (agents name whatever model they like); also what
            ``/v1/models`` lists. Empty: the request's own model name goes upstream.
        api_key: sent as a bearer token (local servers ignore it).
        timeout_s: per upstream call.
        extra_body: fields added to every upstream request (default: vLLM's ``return_token_ids``).
        max_tokens: the cap of a request that sets none, and of every request (None: the upstream's own).
    """

    def __init__(
        self,
        base_url: str,
        model: str = "",
        *,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        extra_body: Mapping[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.max_tokens = max_tokens
        self.base_url = base_url.rstrip("/")
        self.name = model or "upstream"
        self.model = model
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout_s = timeout_s
        self.extra_body = dict(extra_body) if extra_body is not None else {"return_token_ids": True}
        self._session: Any = None

    async def _client(self) -> Any:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=0, force_close=False),
            )
        return self._session

    async def complete(self, request: ChatRequest, state: dict[str, Any]) -> Completion:
        import aiohttp

        body = dict(request.raw, stream=False, logprobs=True, **self.extra_body)
        body.pop("stream_options", None)
        body["model"] = self.model or request.model  # the agent names any model; the upstream serves its own
        if self.max_tokens is not None:
            body.pop("max_completion_tokens", None)
            body["max_tokens"] = min(request.sampling.max_tokens or self.max_tokens, self.max_tokens)
        if request.kind == "chat":
            body["messages"] = request.messages
        path = "/chat/completions" if request.kind == "chat" else "/completions"
        session = await self._client()
        try:
            async with session.post(self.base_url + path, data=json.dumps(body), headers=self.headers) as reply:
                raw = await reply.read()
                status = reply.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise APIError(
                502, f"the upstream policy server at {self.base_url} failed: {type(exc).__name__}: {exc}",
                code="upstream_error",
            ) from None  # fmt: skip
        try:
            answer = json.loads(raw)
        except json.JSONDecodeError:
            answer = None
        if status >= 400 or not isinstance(answer, dict) or not answer.get("choices"):
            detail = answer.get("error") if isinstance(answer, dict) else raw[:300].decode("utf-8", "replace")
            raise APIError(
                status if 400 <= status < 500 else 502,
                f"the upstream answered {status}: {detail}",
                code="upstream_error",
            )
        return _upstream_completion(request, answer)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _upstream_completion(request: ChatRequest, answer: dict[str, Any]) -> Completion:
    choice = answer["choices"][0]
    if request.kind == "chat":
        message = choice.get("message") or {}
        text, tool_calls = message.get("content") or "", message.get("tool_calls") or None
        content = (choice.get("logprobs") or {}).get("content") or []
        logprobs = [float(t["logprob"]) for t in content] if content else None
        tokens = [t.get("token", "") for t in content] if content else None
    else:
        text, tool_calls = choice.get("text") or "", None
        lp = choice.get("logprobs") or {}
        logprobs = [float(x) for x in lp["token_logprobs"]] if lp.get("token_logprobs") else None
        tokens = lp.get("tokens")
    prompt_ids = answer.get("prompt_token_ids") or choice.get("prompt_token_ids")
    return Completion(
        text=text,
        finish_reason=choice.get("finish_reason") or "stop",
        prompt_ids=list(prompt_ids) if prompt_ids is not None else None,
        completion_ids=list(choice["token_ids"]) if choice.get("token_ids") is not None else None,
        logprobs=logprobs,
        tool_calls=tool_calls,
        tokens=tokens,
    )
