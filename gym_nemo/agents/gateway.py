"""The capturing gateway: an OpenAI-compatible server with one URL per agent run, recording every call.

An agent (any framework, any process) is pointed at ``gateway.open_run().base_url``
(``http://HOST:PORT/runs/{run_id}/v1``) as its OpenAI base URL. Each call to ``/chat/completions`` or
``/completions`` under it is answered by the run's :class:`~gym_nemo.agents.backends.Backend` and recorded
as a :class:`~gym_nemo.agents.calls.CallRecord`: the request (messages, tools, sampling), prompt ids,
completion ids, logprobs, finish reason and the reply. Tool calls come back in OpenAI's structured
``tool_calls`` form; ``stream: true`` is served as server-sent events, with the ids still captured.
``/v1/models`` lists the backend's model. :func:`gym_nemo.agents.trajectory.build_trajectory` turns a
run's calls into an :class:`~gym_nemo.rollout.records.EpisodeRecord`.

Errors are OpenAI's error bodies: bad JSON or fields ``400``, a body over ``max_body_bytes`` ``413``, an
unknown run ``404``, a finished run ``410``, a failing upstream ``502``. A failing request never touches
another run.

>>> gw = Gateway(backend=None).start()          # doctest: +SKIP
>>> run = gw.open_run()                         # doctest: +SKIP
>>> run.base_url                                # doctest: +SKIP
'http://127.0.0.1:40123/runs/3f1c.../v1'
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from gym_nemo.agents.backends import Backend
from gym_nemo.agents.calls import APIError, CallRecord, parse_request, request_summary, response_body, stream_events

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass
class Run:
    """One agent run's session: its base URL, its backend and the calls captured so far (in arrival order)."""

    run_id: str
    base_url: str
    backend: Backend
    metadata: dict[str, Any] = field(default_factory=dict)
    calls: list[CallRecord] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False
    state: dict[str, Any] = field(default_factory=dict, repr=False)
    in_flight: int = 0


class Gateway:
    """The server (see the module docstring). ``start()`` runs it on a background thread; use as a context
    manager or call ``stop()``.

    Args:
        backend: answers the calls of runs opened without their own backend.
        host, port: where to listen (``port=0``: any free port; ``url`` says which).
        max_body_bytes: larger request bodies are refused with ``413``.
    """

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_body_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.backend = backend
        self.host, self.port = host, port
        self.max_body_bytes = max_body_bytes
        self.runs: dict[str, Run] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout_s: float = 30.0) -> Gateway:
        """Serve on a daemon thread; returns once the socket listens."""
        import uvicorn

        config = uvicorn.Config(
            self.app, host=self.host, port=self.port, log_level="warning", access_log=False, backlog=4096,
            lifespan="off", timeout_keep_alive=60, interface="asgi3", proxy_headers=False,
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        started = threading.Event()

        def serve() -> None:
            loop = _new_loop()
            self.loop = loop
            asyncio.set_event_loop(loop)
            started.set()
            loop.run_until_complete(self._server.serve())
            loop.run_until_complete(self._close_backends())
            loop.close()

        self._thread = threading.Thread(target=serve, name="gym-nemo-gateway", daemon=True)
        self._thread.start()
        started.wait(timeout_s)
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the gateway did not start on {self.host}:{self.port}")
            time.sleep(0.005)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving (in-flight calls finish first) and close the backends."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout_s)
            self._server = None

    async def _close_backends(self) -> None:
        backends = {id(b): b for b in [self.backend, *(r.backend for r in self.runs.values())] if b is not None}
        for backend in backends.values():
            await backend.aclose()

    def __enter__(self) -> Gateway:
        return self if self._server is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ runs
    def open_run(
        self, run_id: str | None = None, *, backend: Backend | None = None, metadata: Mapping[str, Any] | None = None
    ) -> Run:
        """A new run session; its ``base_url`` is what the agent uses as OpenAI base URL."""
        run_id = run_id or secrets.token_hex(8)
        if run_id in self.runs:
            raise ValueError(f"run {run_id!r} exists")
        chosen = backend if backend is not None else self.backend
        if chosen is None:
            raise ValueError("the gateway has no default backend; pass backend=")
        run = Run(run_id, f"{self.url}/runs/{run_id}/v1", chosen, dict(metadata or {}))
        self.runs[run_id] = run
        return run

    def finish_run(self, run_id: str) -> Run:
        """Mark the run finished (later calls get ``410``) and return it with its calls."""
        run = self.runs[run_id]
        run.finished = True
        return run

    def pop_run(self, run_id: str) -> Run:
        """Finish the run and forget it (its URL then answers ``404``)."""
        run = self.finish_run(run_id)
        del self.runs[run_id]
        return run

    # ------------------------------------------------------------------ the app
    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app, routed by hand: a web framework's routing and request objects cost ~0.2 ms a call."""
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path.startswith("/runs/"):
            run_id, _, rest = path[len("/runs/") :].partition("/")
            route = _RUN_ROUTES.get(rest)
            if run_id and route is not None:
                if method != route[0]:
                    await _send(send, 405, b'{"detail":"Method Not Allowed"}', [(b"allow", route[0].encode())])
                elif route[1] in ("chat", "completion"):
                    await self._handle(run_id, scope, receive, send, route[1])
                else:
                    await self._get(run_id, route[1], send)
                return
        if path == "/health" and method == "GET":
            await _send_json(send, {"status": "ok", "runs": len(self.runs)})
        elif path.startswith("/v1/"):
            error = APIError(404, "this gateway serves per-run URLs: use /runs/{run_id}/v1/...", code="run_not_found")
            await _send_json(send, error.body(), 404)
        else:
            await _send(send, 404, b'{"detail":"Not Found"}')

    async def _get(self, run_id: str, what: str, send: Send) -> None:
        """``/v1/models`` or ``/calls`` of a run."""
        try:
            run = self._run(run_id, allow_finished=True)
        except APIError as exc:
            await _send_json(send, exc.body(), exc.status)
            return
        if what == "models":
            models = [{"id": run.backend.name, "object": "model", "owned_by": "gym_nemo"}]
            await _send_json(send, {"object": "list", "data": models})
        else:
            calls = [c.to_dict() for c in run.calls]
            await _send_json(send, {"run_id": run_id, "finished": run.finished, "calls": calls})

    def _run(self, run_id: str, *, allow_finished: bool = False) -> Run:
        run = self.runs.get(run_id)
        if run is None:
            raise APIError(404, f"no run {run_id!r} on this gateway", code="run_not_found", param="run_id")
        if run.finished and not allow_finished:
            raise APIError(410, f"run {run_id!r} has finished; it takes no more calls", code="run_finished")
        return run

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise APIError(
                413, f"the body is {int(declared):,} bytes; the limit is {self.max_body_bytes:,}", code="body_too_large"
            )
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise APIError(400, "the client disconnected before sending the whole body", code="client_disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise APIError(
                    413, f"the body exceeds the limit of {self.max_body_bytes:,} bytes", code="body_too_large"
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _handle(self, run_id: str, scope: Scope, receive: Receive, send: Send, kind: str) -> None:
        started = time.time()
        run: Run | None = None
        try:
            run = self._run(run_id)
            parsed = parse_request(await self._body(scope, receive), kind)
            run.in_flight += 1
            try:
                completion = await run.backend.complete(parsed, run.state)
            finally:
                run.in_flight -= 1
            call_id = f"chatcmpl-{run_id}-{len(run.calls)}"
            body = response_body(parsed, completion, call_id, parsed.model or run.backend.name)
            choice = body["choices"][0]
            run.calls.append(
                CallRecord(
                    index=len(run.calls),
                    run_id=run_id,
                    kind=kind,
                    request=request_summary(parsed),
                    prompt_ids=completion.prompt_ids,
                    completion_ids=completion.completion_ids,
                    logprobs=completion.logprobs,
                    finish_reason=choice["finish_reason"],
                    response=choice.get("message") or {"text": choice.get("text", "")},
                    prompt_text=completion.prompt_text,
                    completion_text=completion.completion_text,
                    started=started,
                    duration_s=time.time() - started,
                )
            )
        except APIError as exc:
            if run is not None:
                run.errors.append({"status": exc.status, "message": exc.message, "at": started})
            await _send_json(send, exc.body(), exc.status)
            return
        except Exception as exc:  # a backend bug: a 500 with the reason, never a hung agent
            error = APIError(500, f"{type(exc).__name__}: {exc}", code="internal_error")
            if run is not None:
                run.errors.append({"status": 500, "message": error.message, "at": started})
            await _send_json(send, error.body(), 500)
            return
        if not parsed.stream:
            await _send_json(send, body)
            return
        headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for event in stream_events(parsed, body):
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


_RUN_ROUTES = {  # the path after /runs/{run_id}/: (method, what)
    "v1/chat/completions": ("POST", "chat"),
    "v1/completions": ("POST", "completion"),
    "v1/models": ("GET", "models"),
    "calls": ("GET", "calls"),
}


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when installed (the ``serve`` extra has it: less CPU per call), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def _send_json(send: Send, body: Any, status: int = 200) -> None:
    await _send(send, status, json.dumps(body, ensure_ascii=False).encode("utf-8", "replace"))  # a lone surrogate: "?"


async def _send(send: Send, status: int, data: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": data})
