"""``gym-nemo serve ENV_ID``: many concurrent sessions of one registered env behind an HTTP API.

The app (FastAPI on uvicorn, one process) keeps a session per episode stream, each with its own env:

- ``POST /sessions`` creates one (``{"request_id"}`` optional: a retried create returns the same session);
  ``POST /sessions/{id}/reset`` ``{"seed", "options", "request_id"}``; ``POST /sessions/{id}/step``
  ``{"action", "request_id"}``; ``DELETE /sessions/{id}``. Replies carry what ``env.reset``/``env.step``
  return (observation, reward, flags, info) as JSON.
- **Idempotent by request id.** A session remembers the replies to its last requests by ``request_id``; a
  retry of a request that is still running waits for it, a retry of a finished one gets the same reply. A
  step is never applied twice, whatever the client's timeouts and retries.
- **Bounded concurrency.** Env calls run in a thread pool (``workers``, default ``2 * cores + 2``: env
  work mostly waits on the sandbox or the verifier process). At most ``max_pending`` calls may be queued or
  running; past that a call is answered ``503`` with ``Retry-After`` at once, never left hanging. Past
  ``max_sessions`` a create is answered ``429``. A session takes one call at a time (a different request
  on a busy session is ``409``).
- **Expiry.** A session idle for ``session_ttl_s`` is closed; its id then answers ``404``, as unknown ids do.
- **Bad input** gets a 4xx with a message saying what was wrong: bad JSON or wrong types ``400``, unknown
  session ``404``, a body over ``max_body_bytes`` ``413``, step before reset ``409``. It never touches
  another session.
- ``GET /health`` (``server_id`` is new on every start, so clients can tell a restart), ``GET /metrics``
  (sessions, requests, rejections, step latency percentiles), ``GET /info`` (env id, spaces, tools).
- **Shutdown** (SIGINT/SIGTERM): uvicorn stops accepting, in-flight requests finish, then every env is closed.
- **NeMo Gym resources-server routes**, so NeMo Gym agents can drive the server: ``POST /seed_session``
  (the task row; starts an episode on it, the session rides in a cookie as in NeMo Gym), ``POST /<tool>``
  for each of the env's tools (the arguments as the body; the reply is ``{"output": text}``), ``POST
  /verify`` (task row + ``response``; returns the row with ``reward``, scored as
  :func:`gym_nemo.integrations.nemo_gym.score` scores it) and ``POST /close_session``.

All sessions of a server share one task pool (built once; passed to each new env as ``data=``), so a session
costs a fraction of a millisecond to create.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from gymnasium.error import ResetNeeded

import gym_nemo
from gym_nemo.integrations.nemo_gym import SERVER_ENVS, SERVER_TEXT, output_text
from gym_nemo.rollout.records import to_jsonable

#: Cookie that carries the session id of NeMo Gym-style clients (``/seed_session`` sets it).
SESSION_COOKIE = "gym_nemo_session"


class HTTPProblem(Exception):
    """A request the server refuses: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, dict(headers or {})


@dataclass
class ServeConfig:
    """What one server hosts and its limits (see the module docstring)."""

    env_id: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    workers: int = 0  # 0: 2 * cores + 2
    max_pending: int = 256
    max_sessions: int = 10_000
    session_ttl_s: float = 600.0
    max_body_bytes: int = 4 * 1024 * 1024
    call_timeout_s: float = 300.0
    remembered_replies: int = 8

    def __post_init__(self) -> None:
        if self.workers <= 0:
            self.workers = 2 * (os.cpu_count() or 1) + 2


class _Session:
    """One env and the replies to its latest requests (for idempotent retries)."""

    def __init__(self, session_id: str, env: gym.Env, remembered: int) -> None:
        self.id, self.env = session_id, env
        self.last_used = time.monotonic()
        self.replies: OrderedDict[str, asyncio.Future[Any]] = OrderedDict()
        self.remembered = remembered
        self.busy = False
        self.closed = False
        self.broken: str | None = None  # a call that overran its timeout may still hold the env


class _EnvFactory:
    """Builds the server's envs. The first (``probe``, kept for ``/info`` and the tool routes) is built with
    the given kwargs; every later one gets the probe's task pool as ``data=`` instead of rebuilding it."""

    def __init__(self, env_id: str, env_kwargs: Mapping[str, Any]) -> None:
        self.env_id, self.env_kwargs = env_id, dict(env_kwargs)
        self.probe = gym.make(env_id, **self.env_kwargs)
        self._kwargs = self._shared_kwargs()

    def make(self) -> gym.Env:
        return gym.make(self.env_id, **self._kwargs)

    def _shared_kwargs(self) -> dict[str, Any]:
        tasks = getattr(self.probe.unwrapped, "tasks", None)
        if tasks is None:
            return self.env_kwargs
        shared = {k: v for k, v in self.env_kwargs.items() if k not in ("data", "task_ids")} | {"data": tasks}
        try:  # envs whose pool comes from other kwargs (a generator's config) refuse data=: build theirs each time
            gym.make(self.env_id, **shared).close()
        except (TypeError, ValueError):
            return self.env_kwargs
        return shared


class _Stats:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.step_latency_s: deque[float] = deque(maxlen=20_000)
        self.started = time.time()

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def percentile(self, q: float) -> float | None:
        if not self.step_latency_s:
            return None
        values = sorted(self.step_latency_s)
        return values[min(len(values) - 1, math.ceil(q * len(values)) - 1)]


class EnvServer:
    """Sessions, the thread pool and the bookkeeping behind the routes (one per app)."""

    def __init__(self, config: ServeConfig) -> None:
        if config.env_id not in gym.registry:
            raise ValueError(f"unknown env {config.env_id!r}; `gym-nemo list` shows the registered ones")
        self.config = config
        self.server_id = secrets.token_hex(8)
        self.factory = _EnvFactory(config.env_id, config.env_kwargs)
        self.executor = ThreadPoolExecutor(config.workers, thread_name_prefix="gym-nemo-serve")
        self.sessions: dict[str, _Session] = {}
        self.creates: OrderedDict[str, str] = OrderedDict()  # create request id -> session id
        self.pending = 0
        self.stats = _Stats()
        self.closing = False
        self._text = next((SERVER_TEXT.get(s, output_text) for s, e in SERVER_ENVS.items() if e == config.env_id),
                          output_text)  # fmt: skip
        self.verifier = self.factory.make()  # scores /verify rows that come without a session

    # ------------------------------------------------------------------ env calls
    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in the pool; 503 at once when ``max_pending`` calls are already queued or running."""
        if self.closing:
            raise HTTPProblem(503, "the server is shutting down", {"Retry-After": "1"})
        if self.pending >= self.config.max_pending:
            self.stats.count("rejected_busy")
            raise HTTPProblem(503, f"server busy: {self.pending} env calls in flight; retry", {"Retry-After": "1"})
        self.pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await asyncio.wait_for(loop.run_in_executor(self.executor, fn), self.config.call_timeout_s)
        finally:
            self.pending -= 1

    # ------------------------------------------------------------------ sessions
    def session(self, session_id: str) -> _Session:
        found = self.sessions.get(session_id)
        if found is None:
            raise HTTPProblem(404, f"unknown session {session_id!r} (closed, expired, or the server restarted)")
        if found.broken is not None:
            raise HTTPProblem(410, f"session {session_id!r} is unusable: {found.broken}")
        found.last_used = time.monotonic()
        return found

    async def create(self, request_id: str | None) -> _Session:
        if request_id is not None and request_id in self.creates and self.creates[request_id] in self.sessions:
            return self.sessions[self.creates[request_id]]
        if len(self.sessions) >= self.config.max_sessions:
            self.stats.count("rejected_sessions")
            raise HTTPProblem(429, f"session limit of {self.config.max_sessions} reached; close sessions or retry")
        env = await self.call(self.factory.make)
        session = _Session(secrets.token_hex(12), env, self.config.remembered_replies)
        self.sessions[session.id] = session
        if request_id is not None:
            self.creates[request_id] = session.id
            while len(self.creates) > 2 * self.config.max_sessions:
                self.creates.popitem(last=False)
        self.stats.count("sessions_created")
        return session

    async def close(self, session_id: str, reason: str = "sessions_closed") -> bool:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False
        session.closed = True
        self.stats.count(reason)
        if not session.busy:  # a busy one is closed by the call that holds it
            await asyncio.get_running_loop().run_in_executor(self.executor, _close_quietly, session.env)
        return True

    async def run_once(self, session: _Session, request_id: str | None, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the session's env once per ``request_id``; retries get the first run's reply.

        The call runs in a task of its own, so it finishes (and its reply is kept for a retry) even when the
        client that sent it has gone."""
        if request_id is not None and request_id in session.replies:
            self.stats.count("replayed")
            return await asyncio.shield(session.replies[request_id])
        if session.busy:
            raise HTTPProblem(409, f"session {session.id!r} is running another request; send one at a time")
        session.busy = True
        reply = asyncio.ensure_future(self._run(session, request_id, fn))
        reply.add_done_callback(lambda task: task.cancelled() or task.exception())  # retrieved, even if unawaited
        if request_id is not None:
            session.replies[request_id] = reply
            while len(session.replies) > session.remembered:
                session.replies.popitem(last=False)
        return await asyncio.shield(reply)

    async def _run(self, session: _Session, request_id: str | None, fn: Callable[[], Any]) -> Any:
        try:
            return await self.call(fn)
        except HTTPProblem as exc:
            if exc.status == 503 and request_id is not None:  # refused, not run: a retry may run it
                session.replies.pop(request_id, None)
            raise
        except TimeoutError:
            session.broken = f"an env call overran {self.config.call_timeout_s:g} s"
            raise HTTPProblem(504, f"the env call did not finish within {self.config.call_timeout_s:g} s") from None
        finally:
            session.busy = False
            session.last_used = time.monotonic()
            if session.closed:
                await asyncio.get_running_loop().run_in_executor(self.executor, _close_quietly, session.env)

    async def expire(self) -> None:
        """Close sessions idle longer than ``session_ttl_s`` (run periodically)."""
        cutoff = time.monotonic() - self.config.session_ttl_s
        for session_id in [s.id for s in self.sessions.values() if s.last_used < cutoff and not s.busy]:
            await self.close(session_id, "sessions_expired")

    async def shutdown(self) -> None:
        self.closing = True
        open_sessions = list(self.sessions)
        for session_id in open_sessions:
            await self.close(session_id, "sessions_closed_at_shutdown")
        _close_quietly(self.verifier)
        _close_quietly(self.factory.probe)
        self.executor.shutdown(wait=True, cancel_futures=True)
        print(f"gym-nemo serve: shut down; closed {len(open_sessions)} open session(s)", flush=True)

    # ------------------------------------------------------------------ NeMo Gym verification
    def verify_row(self, row: Mapping[str, Any], session: _Session | None) -> dict[str, Any]:
        """Score a NeMo Gym rollout row as ``score()`` does (the session's env when there is one: its state)."""
        env = session.env.unwrapped if session is not None else self.verifier.unwrapped
        task = env.row_to_task(row, 0)
        verdict = env.verify(task, self._text(row["response"]))
        return {**verdict.to_dict(), "verifier": f"{env.verifier_name}@{env.verifier_version}"}

    def metrics(self) -> dict[str, Any]:
        return {
            "env_id": self.config.env_id,
            "server_id": self.server_id,
            "uptime_s": round(time.time() - self.stats.started, 3),
            "sessions": len(self.sessions),
            "pending_env_calls": self.pending,
            "workers": self.config.workers,
            "max_pending": self.config.max_pending,
            "max_sessions": self.config.max_sessions,
            "counts": dict(self.stats.counts),
            "step_latency_p50_s": self.stats.percentile(0.50),
            "step_latency_p99_s": self.stats.percentile(0.99),
        }


def _close_quietly(env: gym.Env) -> None:
    with contextlib.suppress(Exception):
        env.close()


# ---------------------------------------------------------------------- request parsing
async def _body(request: Request, *, required: bool = True) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        if required:
            raise HTTPProblem(400, "the request body must be a JSON object")
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPProblem(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise HTTPProblem(400, f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def _field(body: Mapping[str, Any], name: str, kinds: type | tuple[type, ...], *, required: bool = False) -> Any:
    if name not in body or body[name] is None:
        if required:
            raise HTTPProblem(400, f"missing field {name!r}")
        return None
    value = body[name]
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in _as_tuple(kinds)):
        names = " or ".join(k.__name__ for k in _as_tuple(kinds))
        raise HTTPProblem(400, f"field {name!r} must be {names}, got {type(value).__name__}")
    return value


def _as_tuple(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def _request_id(body: Mapping[str, Any]) -> str | None:
    request_id = _field(body, "request_id", str)
    if request_id is not None and not 0 < len(request_id) <= 200:
        raise HTTPProblem(400, "field 'request_id' must be 1 to 200 characters")
    return request_id


def _reset_reply(result: tuple[Any, dict[str, Any]]) -> dict[str, Any]:
    observation, info = result
    return {"observation": observation, "info": to_jsonable(info)}


def _step_reply(result: tuple[Any, ...]) -> dict[str, Any]:
    observation, reward, terminated, truncated, info = result
    reward = float(reward)
    return {
        "observation": observation,
        "reward": reward if math.isfinite(reward) else 0.0,
        "terminated": bool(terminated),
        "truncated": bool(truncated),
        "info": to_jsonable(info),
    }


class BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes is answered 413 (declared length or counted as it streams)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0

        async def counting_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPProblem(413, f"the request body is over the {self.limit:,}-byte limit")
            return message

        await self.app(scope, counting_receive, send)

    async def _refuse(self, send: Any) -> None:
        body = json.dumps({"error": f"the request body is over the {self.limit:,}-byte limit"}).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------- the app
# Replies are already plain JSON (``to_jsonable``): routes return ``JSONResponse`` so FastAPI skips its
# per-field ``jsonable_encoder`` walk over transcripts and task rows.


def create_app(config: ServeConfig) -> FastAPI:
    """The ASGI app serving ``config.env_id`` (run it with uvicorn; ``gym-nemo serve`` does)."""
    server = EnvServer(config)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        period = max(0.05, min(config.session_ttl_s / 4, 30.0))

        async def expire_loop() -> None:
            while True:
                await asyncio.sleep(period)
                await server.expire()

        expiry = asyncio.create_task(expire_loop())
        try:
            yield
        finally:
            expiry.cancel()
            await server.shutdown()

    app = FastAPI(title=f"gym-nemo serve {config.env_id}", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.env_server = server
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)

    @app.exception_handler(HTTPProblem)
    async def _problem(_: Request, exc: HTTPProblem) -> JSONResponse:
        server.stats.count(f"http_{exc.status}")
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _failure(_: Request, exc: Exception) -> JSONResponse:
        server.stats.count("http_500")
        return JSONResponse({"error": f"server error: {type(exc).__name__}: {exc}"}, status_code=500)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "closing" if server.closing else "ok", "env_id": config.env_id, "server_id": server.server_id}

    @app.get("/metrics")
    async def metrics() -> dict[str, Any]:
        return server.metrics()

    @app.get("/info")
    async def info() -> dict[str, Any]:
        env = server.factory.probe
        return {
            "env_id": config.env_id,
            "server_id": server.server_id,
            "observation_max_length": int(getattr(env.observation_space, "max_length", 0)),
            "action_max_length": int(getattr(env.action_space, "max_length", 0)),
            "max_episode_steps": env.spec.max_episode_steps if env.spec is not None else None,
            "tools": to_jsonable(getattr(env.unwrapped, "tools", [])),
            "gym_nemo": gym_nemo.__version__,
        }

    @app.post("/sessions")
    async def create_session(request: Request) -> dict[str, Any]:
        body = await _body(request, required=False)
        session = await server.create(_request_id(body))
        return {"session_id": session.id, "server_id": server.server_id, "env_id": config.env_id}

    @app.post("/sessions/{session_id}/reset")
    async def reset(session_id: str, request: Request) -> Response:
        body = await _body(request, required=False)
        seed = _field(body, "seed", int)
        options = _field(body, "options", dict)
        session = server.session(session_id)

        def run() -> dict[str, Any]:
            try:
                return _reset_reply(session.env.reset(seed=seed, options=options))
            except (KeyError, IndexError, TypeError, ValueError) as exc:  # bad options: the caller's mistake
                raise HTTPProblem(400, f"reset failed: {type(exc).__name__}: {exc}") from None

        server.stats.count("resets")
        return JSONResponse(await server.run_once(session, _request_id(body), run))

    @app.post("/sessions/{session_id}/step")
    async def step(session_id: str, request: Request) -> Response:
        body = await _body(request)
        if "action" not in body:
            raise HTTPProblem(400, "missing field 'action' (the assistant's message)")
        action = body["action"]  # any JSON: the env answers a non-str action with its explanatory observation
        session = server.session(session_id)

        def run() -> dict[str, Any]:
            tick = time.perf_counter()
            try:
                reply = _step_reply(session.env.step(action))
            except ResetNeeded as exc:
                raise HTTPProblem(409, f"{exc}") from None
            server.stats.step_latency_s.append(time.perf_counter() - tick)
            return reply

        server.stats.count("steps")
        return JSONResponse(await server.run_once(session, _request_id(body), run))

    @app.delete("/sessions/{session_id}")
    async def delete_session(session_id: str) -> dict[str, Any]:
        if not await server.close(session_id):
            raise HTTPProblem(404, f"unknown session {session_id!r} (closed, expired, or the server restarted)")
        return {"closed": session_id}

    # ------------------------------------------------------------------ NeMo Gym resources-server routes
    @app.post("/seed_session")
    async def seed_session(request: Request) -> Response:
        row = await _body(request)
        _field(row, "responses_create_params", dict, required=True)
        old = request.cookies.get(SESSION_COOKIE)
        if old is not None:
            await server.close(old)
        session = await server.create(None)

        def run() -> dict[str, Any]:
            try:
                session.env.reset(options={"task": row})
            except (KeyError, TypeError, ValueError) as exc:
                raise HTTPProblem(400, f"not a task row for {config.env_id}: {exc}") from None
            return {"session_id": session.id}

        try:
            reply = await server.run_once(session, None, run)
        except HTTPProblem:
            await server.close(session.id)
            raise
        response = JSONResponse(reply)
        response.set_cookie(SESSION_COOKIE, session.id, httponly=True, samesite="lax")
        return response

    @app.post("/verify")
    async def verify(request: Request) -> dict[str, Any]:
        row = await _body(request)
        _field(row, "responses_create_params", dict, required=True)
        _field(row, "response", dict, required=True)
        session_id = request.cookies.get(SESSION_COOKIE)
        session = server.sessions.get(session_id) if session_id else None

        def run() -> dict[str, Any]:
            try:
                return server.verify_row(row, session)
            except (KeyError, TypeError, ValueError) as exc:
                raise HTTPProblem(400, f"cannot verify this row with {config.env_id}: {exc}") from None

        verdict = await (server.run_once(session, None, run) if session is not None else server.call(run))
        server.stats.count("verifies")
        failed = verdict.get("infra_error")
        return {
            **row,
            "reward": 0.0 if failed else float(verdict["reward"]),
            "mask_sample": bool(failed),
            "failure_reason": failed,
            "gym_nemo_verdict": to_jsonable(verdict),
        }

    @app.post("/close_session")
    async def close_session(request: Request) -> Response:
        session_id = request.cookies.get(SESSION_COOKIE)
        closed = session_id is not None and await server.close(session_id)
        response = JSONResponse({"closed": session_id if closed else None})
        response.delete_cookie(SESSION_COOKIE)
        return response

    tool_names = [t["function"]["name"] for t in getattr(server.factory.probe.unwrapped, "tools", [])]
    reserved = {"health", "metrics", "info", "sessions", "seed_session", "verify", "close_session"}
    for name in tool_names:
        if name in reserved:
            raise ValueError(f"tool {name!r} would shadow the server's own /{name} route")
        app.post(f"/{name}")(_tool_route(server, name))
    return app


def _tool_route(server: EnvServer, name: str) -> Callable[[Request], Awaitable[dict[str, Any]]]:
    """``POST /<tool>``: one call of the tool in the cookie's session, as a turn of its episode."""

    async def call_tool(request: Request) -> dict[str, Any]:
        arguments = await _body(request, required=False)
        session_id = request.cookies.get(SESSION_COOKIE)
        if session_id is None:
            raise HTTPProblem(400, f"no session: call /seed_session first (the {SESSION_COOKIE} cookie is missing)")
        session = server.session(session_id)
        action = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)

        def run() -> dict[str, Any]:
            try:
                observation, _, _, truncated, info = session.env.step(action)
            except ResetNeeded as exc:
                raise HTTPProblem(409, f"the episode is over: {exc}") from None
            return {"output": observation, "infra_error": info.get("infra_error"), "episode_over": bool(truncated)}

        return await server.run_once(session, None, run)

    call_tool.__name__ = f"tool_{name}"
    return call_tool


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
    """Run the server until SIGINT/SIGTERM. ``port=0`` picks a free port; the address is printed either way."""
    import socket

    import uvicorn

    app = create_app(config)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    print(f"gym-nemo serve {config.env_id}: listening on http://{host}:{bound}", flush=True)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=30, backlog=4096)
    )
    server.run(sockets=[sock])
