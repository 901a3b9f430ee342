"""``RemoteEnv`` (``gym.make("nemo/Remote-v0", url=..., env_id=...)``): an env whose episodes run on a
``gym-nemo serve`` server, itself a ``gymnasium.Env`` (vector envs, collectors and ``check_env`` take it).

- Spaces come from the server's ``/info``; ``reset``/``step`` are one HTTP request each on a session of
  the client's own, created on the first ``reset``.
- **Retries without double steps.** Every call carries a request id, reused by its retries; the server
  runs a request id once and replays its reply, so a retried step is never applied twice. Connection
  failures, timeouts, ``503`` (busy; ``Retry-After`` is honoured) and ``429`` (session cap) are retried
  ``retries`` times with exponential backoff.
- **Infrastructure failure is not task failure.** A step that still fails (the server died, restarted and
  lost the session, overran its call timeout, or answered 5xx) returns ``truncated=True`` with
  ``info["infra_error"]`` saying what happened, never a hang or a silent 0; the next ``reset`` opens a new
  session. ``reset`` waits up to ``reconnect_s`` for a server that is down (one that restarts in the
  meantime is used), then raises :class:`~gym_nemo.core.errors.InfraError`.
- Seeding: ``reset(seed=s)`` sends ``s``; ``reset()`` sends a seed drawn from the client's own
  ``np_random``, so a seeded client replays the same tasks.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from typing import Any, ClassVar

import gymnasium as gym
import httpx
from gymnasium.error import ResetNeeded

from gym_nemo.core.errors import InfraError
from gym_nemo.core.spaces import UnicodeText

_RETRY_STATUSES = frozenset({429, 502, 503})  # session cap reached, proxy errors, busy


class _Refused(Exception):
    """The server answered with a definite refusal (a 4xx/5xx that retrying does not change)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


class RemoteEnv(gym.Env[str, str]):
    """A text env served by ``gym-nemo serve`` at ``url`` (see the module docstring).

    Args:
        url: the server, e.g. ``http://127.0.0.1:8000``.
        env_id: the env the server must be serving (checked against its ``/info``); None accepts any.
        timeout_s: seconds to wait for one reply (a step that verifies code may take a while).
        connect_timeout_s: seconds to wait for a connection.
        retries: further attempts after a connection failure, timeout or 503.
        backoff_s: the first retry's delay; it doubles each time (capped at 2 s).
        reconnect_s: how long ``reset`` (and construction) wait for a server that cannot be reached.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "human"], "render_fps": 4}

    def __init__(
        self,
        url: str,
        env_id: str | None = None,
        *,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 5.0,
        retries: int = 3,
        backoff_s: float = 0.25,
        reconnect_s: float = 30.0,
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.url = url.rstrip("/")
        self.retries, self.backoff_s, self.reconnect_s = retries, backoff_s, reconnect_s
        self.render_mode = render_mode
        self._client = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s))
        server = self._call("GET", "/info", None, deadline=time.monotonic() + reconnect_s)
        if env_id is not None and server["env_id"] != env_id:
            raise ValueError(f"the server at {self.url} serves {server['env_id']!r}, not {env_id!r}")
        self.env_id: str = server["env_id"]
        self.server_info = server
        self.observation_space = UnicodeText(int(server["observation_max_length"]))
        self.action_space = UnicodeText(int(server["action_max_length"]))
        self._session: str | None = None
        self._server_id: str | None = None
        self._info: dict[str, Any] = {}
        self._done = True
        self._started = False

    # ------------------------------------------------------------------ HTTP
    def _call(self, method: str, path: str, body: dict[str, Any] | None, *, deadline: float | None = None) -> Any:
        """One logical request: retried on connection failures, timeouts and 503s (same body, same request id)
        ``retries`` times, or until ``deadline`` when given. Raises ``_Refused`` or ``InfraError``."""
        attempt = 0
        while True:
            try:
                response = self._client.request(method, path, json=body)
                if response.status_code < 400:
                    return response.json()
                message = _error_message(response)
                if response.status_code not in _RETRY_STATUSES:
                    raise _Refused(response.status_code, message)
                problem = f"HTTP {response.status_code}: {message}"
                wait = float(response.headers.get("retry-after", 0) or 0)
            except httpx.TransportError as exc:  # connect refused/reset, timeouts, a server dying mid-reply
                problem, wait = f"{type(exc).__name__}: {exc or 'no reply'}", 0.0
            except ValueError as exc:  # a reply that is not JSON
                problem, wait = f"unreadable reply: {exc}", 0.0
            attempt += 1
            wait = max(wait, min(self.backoff_s * 2 ** (attempt - 1), 2.0))
            out_of_time = deadline is not None and time.monotonic() + wait > deadline
            if (deadline is None and attempt > self.retries) or out_of_time:
                raise InfraError(f"{method} {self.url}{path} failed after {attempt} attempt(s): {problem}")
            time.sleep(wait)

    def _open_session(self, deadline: float) -> None:
        reply = self._call("POST", "/sessions", {"request_id": uuid.uuid4().hex}, deadline=deadline)
        self._session, self._server_id = reply["session_id"], reply["server_id"]

    def _drop_session(self) -> None:
        """Close the session on the server if it is still there (best effort, one quick try)."""
        session, self._session = self._session, None
        if session is None:
            return
        with contextlib.suppress(httpx.HTTPError):
            self._client.delete(f"/sessions/{session}", timeout=2.0)

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start an episode on the server (``options`` as the served env takes them: task_id, task_index, task)."""
        super().reset(seed=seed)
        server_seed = seed if seed is not None else int(self.np_random.integers(2**31 - 1))
        body = {"seed": server_seed, "options": options, "request_id": uuid.uuid4().hex}
        deadline = time.monotonic() + self.reconnect_s
        while True:
            if self._session is None:
                self._open_session(deadline)
            try:
                reply = self._call("POST", f"/sessions/{self._session}/reset", body, deadline=deadline)
                break
            except _Refused as exc:
                if exc.status in (404, 409, 410) and time.monotonic() < deadline:
                    # the session is gone, unusable, or still busy with a step this client gave up on: open another
                    self._drop_session()
                    continue
                if exc.status == 400:
                    raise ValueError(f"the server refused the reset: {exc.message}") from None
                raise InfraError(f"reset failed on {self.url}: {exc}") from None
        self._info = dict(reply["info"])
        self._done = False
        self._started = True
        self._render_if_human()
        return reply["observation"], dict(reply["info"])

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if not self._started:
            raise ResetNeeded("call reset() before step()")
        if self._done:
            raise ResetNeeded("the episode is over; call reset() before step()")
        body = {"action": _jsonable_action(action), "request_id": uuid.uuid4().hex}
        try:
            reply = self._call("POST", f"/sessions/{self._session}/step", body)
        except InfraError as exc:
            return self._infra_failure(f"the server could not be reached: {exc}")
        except _Refused as exc:
            if exc.status in (404, 410):
                return self._infra_failure(f"the episode's session is gone (server restarted or expired it): {exc}")
            return self._infra_failure(f"the server failed the step: {exc}")
        observation, info = reply["observation"], dict(reply["info"])
        terminated, truncated = bool(reply["terminated"]), bool(reply["truncated"])
        self._info = info
        self._done = terminated or truncated
        self._render_if_human()
        return observation, float(reply["reward"]), terminated, truncated, info

    def _infra_failure(self, error: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """End the episode as truncated by an infrastructure failure; the next reset opens a new session."""
        self._done = True
        self._drop_session()
        info = {
            "infra_error": error,
            "task_id": self._info.get("task_id", ""),
            "turn": int(self._info.get("turn", 0)) + 1,
            "messages": list(self._info.get("messages", [])),
            "reward_components": {},
        }
        return f"[infrastructure error] {error}", 0.0, False, True, info

    def render(self) -> str | None:
        text = "\n\n".join(f"<{m['role']}>\n{m['content']}" for m in self._info.get("messages", []))
        if self.render_mode == "ansi":
            return text
        if self.render_mode == "human":
            print(text)
        return None

    def _render_if_human(self) -> None:
        if self.render_mode == "human":
            self.render()

    def close(self) -> None:
        self._drop_session()
        self._client.close()
        super().close()


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except (ValueError, AttributeError):
        return response.text[:500]


def _jsonable_action(action: Any) -> Any:
    """The action as JSON: bytes are decoded (as the env itself would); anything JSON cannot carry is sent as
    null, which the served env answers with its usual explanatory observation for a non-str action."""
    if isinstance(action, bytes):
        return action.decode("utf-8", "replace")
    try:
        json.dumps(action)
    except (TypeError, ValueError):
        return None
    return action
