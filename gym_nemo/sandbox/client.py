"""The host side of the fork-server protocol, shared by the local and docker backends.

``ForkServerBackend`` implements the ``Sandbox`` protocol (``run``, ``session``, ``info``, ``enforced``)
on top of one method a backend provides, ``_request(req, timeout_s, route)``: where to send a request
(the local daemon's socket, or a pooled container's). ``route`` pins a session to one place.
"""

from __future__ import annotations

import itertools
import socket
import threading
from typing import Any

from gym_nemo.sandbox.base import ExecResult, Limits
from gym_nemo.sandbox.forkserver.protocol import encode_frame, read_frame_blocking

LANGUAGES = ("python", "bash", "cpp")
SESSION_RESTARTED = "[a fresh session was started: variables from earlier calls are gone]\n"


class ForkServerClient:
    """One connection to a fork server: frames out, frames in, one request in flight (thread-safe)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()
        self.ids = itertools.count(1)

    def request(self, req: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            req = {**req, "id": next(self.ids)}
            self.sock.sendall(encode_frame(req))
            reply = read_frame_blocking(self.sock)
        if reply is None:
            raise ConnectionError("the fork server closed the connection")
        return reply

    def close(self) -> None:
        self.sock.close()


def result_from_reply(reply: dict[str, Any]) -> ExecResult:
    if "error" in reply:
        return ExecResult(infra_error=f"fork server: {reply['error']}")
    return ExecResult(**{k: reply[k] for k in ExecResult.__dataclass_fields__ if k in reply})


class ForkServerBackend:
    """The Sandbox protocol over fork-server requests; subclasses say where requests go."""

    name = "fork-server"
    limits: Limits
    _info: dict[str, Any] | None = None

    def _request(self, req: dict[str, Any], timeout_s: float, route: Any = None) -> dict[str, Any]:
        """Send ``req``; return the reply, or ``{"infra_error": ...}`` when the server cannot be reached."""
        raise NotImplementedError

    def _session_route(self) -> Any:
        """Where a new session lives (None: wherever ``_request`` sends things)."""
        return None

    def _release_route(self, route: Any) -> None:
        """Called when a session closes."""

    def _describe(self, reply: dict[str, Any]) -> dict[str, Any]:
        return reply

    def info(self) -> dict[str, Any]:
        """The server's self-description: mode, enforced protections, notes on what fell back."""
        if self._info is None:
            reply = self._request({"op": "info"}, 10)
            if "infra_error" in reply:
                raise RuntimeError(reply["infra_error"])
            self._info = self._describe(reply)
        return self._info

    def enforced(self) -> dict[str, bool]:
        return dict(self.info()["enforced"])

    def request_limits(self, timeout: float | None = None, memory_mb: int | None = None) -> dict[str, Any]:
        lim = self.limits
        return {
            "timeout_s": float(timeout if timeout is not None else lim.timeout_s),
            "memory_mb": int(memory_mb if memory_mb is not None else lim.memory_mb),
            "max_output_bytes": lim.max_output_bytes,
            "max_file_mb": lim.max_file_mb,
            "max_open_files": lim.max_open_files,
            "max_processes": lim.max_processes,
        }

    def run(
        self,
        code: str,
        *,
        language: str = "python",
        stdin: str = "",
        timeout: float | None = None,
        memory_mb: int | None = None,
    ) -> ExecResult:
        if language not in LANGUAGES:
            raise ValueError(f"unsupported language {language!r}; supported: {', '.join(LANGUAGES)}")
        limits = self.request_limits(timeout, memory_mb)
        req = {"op": "run", "code": code, "language": language, "stdin": stdin, "limits": limits}
        return result_from_reply(self._request(req, limits["timeout_s"]))

    def session(self, *, timeout: float | None = None, memory_mb: int | None = None) -> ForkServerSession:
        """A stateful Python session: variables and scratch files persist across ``run`` calls."""
        return ForkServerSession(self, self.request_limits(timeout, memory_mb))


class ForkServerSession:
    """A stateful sandboxed Python process for one episode.

    A run that times out or floods output kills the session; the next ``run`` starts a fresh one and
    says so on stderr, so the policy learns its variables are gone.
    """

    def __init__(self, backend: ForkServerBackend, limits: dict[str, Any]) -> None:
        self.backend = backend
        self.limits = limits
        self._sid: str | None = None
        self._route: Any = None
        self._lost = False

    def run(
        self, code: str, *, stdin: str = "", timeout: float | None = None, memory_mb: int | None = None
    ) -> ExecResult:
        if self._sid is None:
            self._route = self.backend._session_route()
            reply = self.backend._request({"op": "session_open", "limits": self.limits}, 30, self._route)
            if "session" not in reply:
                return ExecResult(infra_error=reply.get("infra_error") or reply.get("error") or "session failed")
            self._sid = reply["session"]
        run_timeout = float(timeout if timeout is not None else self.limits["timeout_s"])
        limits = {"timeout_s": timeout, "memory_mb": memory_mb}
        req = {"op": "session_run", "session": self._sid, "code": code, "stdin": stdin, "limits": limits}
        reply = self.backend._request(req, run_timeout, self._route)
        result = result_from_reply(reply)
        note = SESSION_RESTARTED if self._lost else ""
        self._lost = bool(reply.get("session_lost"))
        if self._lost or "infra_error" in reply:
            self._sid = None
        if note and result.infra_error is None:
            result = ExecResult(**{**result.to_dict(), "stderr": note + result.stderr})
        return result

    def close(self) -> None:
        if self._sid is not None:
            self.backend._request({"op": "session_close", "session": self._sid}, 10, self._route)
        if self._route is not None:
            self.backend._release_route(self._route)
        self._sid = self._route = None

    def __enter__(self) -> ForkServerSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
