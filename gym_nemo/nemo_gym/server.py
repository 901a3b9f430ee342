"""One NeMo Gym server process per server (and config) per machine, shared by every env that uses it.

``start_server(name)`` returns the base URL of a running server, starting it when none answers: like the
sandbox daemon, under a file lock in a private runtime directory (so 64 env workers start exactly one),
with a health check (``GET /_gym_nemo/health``) before reuse and a fresh start when the recorded process is
gone (a crash, a kill, an idle exit). The process is ``launcher.py`` run by the NeMo Gym venv's Python on a
loopback port; it exits after ``idle_exit_s`` seconds without requests. Server processes are forked by a
zygote (``launcher.py --zygote``, one per machine, shared the same way) that imported NeMo Gym once, so a
server starts in 1-2 s instead of the 7-15 s that importing NeMo Gym takes here; each is still a process of
its own, in its own session, with its own log.

``NeMoGymClient`` is one env's (one episode's) view of a server: an ``httpx`` session whose cookie jar holds
the server's session cookie, restarted per episode. Transport failures and non-2xx answers raise
:class:`~gym_nemo.core.errors.InfraError` (never a reward); the next ``new_session()`` finds or restarts the
server.

>>> url = start_server("example_single_tool_call")  # doctest: +SKIP
>>> httpx.post(f"{url}/get_weather", json={"city": "SF"}).json()  # doctest: +SKIP
{'city': 'SF', 'weather_description': 'The weather in SF is cold.'}
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from gym_nemo.core.errors import InfraError
from gym_nemo.nemo_gym import launcher
from gym_nemo.nemo_gym.runtime import RuntimeMissing, venv_python

LAUNCHER = Path(launcher.__file__)
HEALTH_ROUTE = launcher.HEALTH_ROUTE


class ServerHTTPError(InfraError):
    """A NeMo Gym server answered with a 4xx/5xx status: an infrastructure failure, never a reward."""

    def __init__(self, message: str, status: int, body: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class ServerStartError(RuntimeMissing):
    """A NeMo Gym server did not start; the message names the server and what it lacks."""


def runtime_dir() -> Path:
    """A private per-user directory for the servers' state files, locks and logs."""
    path = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / f"gym_nemo-{os.geteuid()}" / "nemo_gym"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_uid != os.geteuid() or path.stat().st_mode & 0o077:
        raise PermissionError(f"{path} must be owned by uid {os.geteuid()} with mode 0700")
    return path


def _key(name: str, config: Mapping[str, Any] | None, model_url: str | None) -> str:
    ident = json.dumps([name, str(venv_python()), LAUNCHER.read_text(), dict(config or {}), model_url], sort_keys=True)
    return f"{name}-{hashlib.sha256(ident.encode()).hexdigest()[:10]}"


def _paths(name: str, config: Mapping[str, Any] | None, model_url: str | None = None) -> tuple[Path, Path, Path]:
    rt, key = runtime_dir(), _key(name, config, model_url)
    return rt / f"{key}.json", rt / f"{key}.lock", rt / f"{key}.log"


def _healthy(state_file: Path) -> str | None:
    """The base URL of the server the state file names, if it answers its health check."""
    try:
        state = json.loads(state_file.read_text())
        url = f"http://127.0.0.1:{int(state['port'])}"
        reply = httpx.get(url + HEALTH_ROUTE, timeout=5.0)
    except (OSError, ValueError, KeyError, httpx.HTTPError):
        return None
    return url if reply.status_code == 200 and reply.json().get("pid") == state.get("pid") else None


def _explain(name: str, log: Path) -> str:
    """Why a server died at start, from its log: the missing module, file or interpreter, and the fix."""
    text = log.read_text(errors="replace") if log.exists() else ""
    tail = "\n".join(text.strip().splitlines()[-12:])
    missing = re.findall(r"No module named '([^']+)'", text)
    if missing:
        return (
            f"NeMo Gym server {name!r} failed to start: a requirement is missing (Python module {missing[-1]!r}); "
            f"run `gym-nemo nemo-gym setup {name}`. Log {log}:\n{tail}"
        )
    files = re.findall(r"(?:FileNotFoundError|No such file or directory)[^\n]*'([^']+)'", text)
    if files:
        return f"NeMo Gym server {name!r} failed to start: a data file is missing ({files[-1]}). Log {log}:\n{tail}"
    causes = [line for line in text.splitlines() if re.match(r"^[\w.]+(Error|Exception|Exit)\b", line)]
    cause = f": {causes[-1][:300]}" if causes else ""
    return f"NeMo Gym server {name!r} failed to start{cause}. Log {log}:\n{tail}"


def start_server(
    name: str,
    config: Mapping[str, Any] | None = None,
    *,
    model_url: str | None = None,
    idle_exit_s: float = 600.0,
    start_timeout_s: float = 300.0,
) -> str:
    """The base URL (``http://127.0.0.1:PORT``) of NeMo Gym's resources server ``name``, started if needed.

    ``config`` overrides fields of the server's config (e.g. mcqa's ``grading_mode``); ``model_url`` is where the
    model servers its config names (an LLM judge: :class:`~gym_nemo.nemo_gym.judge.JudgeServer`) answer. Each
    distinct config and model URL is its own process. Raises :class:`ServerStartError` naming the server and
    the missing piece."""
    state_file, lock_file, log_file = _paths(name, config, model_url)
    url = _healthy(state_file)
    if url is not None:
        return url
    python = venv_python()
    if not python.exists():
        raise ServerStartError(
            f"NeMo Gym server {name!r} cannot start: the NeMo Gym interpreter {python} does not exist; "
            f"run `gym-nemo nemo-gym setup {name}`"
        )
    with open(lock_file, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        url = _healthy(state_file)
        if url is not None:
            return url
        _stop_recorded(state_file)
        state_file.unlink(missing_ok=True)
        args = ["--server", name, "--state-file", str(state_file), "--config", json.dumps(dict(config or {}))]
        args += ["--model-url", model_url] if model_url else []
        pid = _spawn(python, [*args, "--idle-exit", str(idle_exit_s)], log_file, idle_exit_s)
        deadline = time.monotonic() + start_timeout_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                raise ServerStartError(_explain(name, log_file))
            url = _healthy(state_file)
            if url is not None:
                return url
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        raise ServerStartError(
            f"NeMo Gym server {name!r} did not answer within {start_timeout_s:.0f} s; see {log_file}"
        )


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (not gone, not a zombie: a server we spawned directly is our child until reaped)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _ask_zygote(sock_path: Path, argv: list[str], log: Path) -> int | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30.0)
    try:
        sock.connect(str(sock_path))
        sock.sendall((json.dumps({"argv": argv, "log": str(log)}) + "\n").encode())
        return int(json.loads(sock.makefile("r").readline())["pid"])
    except (OSError, ValueError, KeyError):
        return None
    finally:
        sock.close()


def _spawn(python: Path, argv: list[str], log: Path, idle_exit_s: float) -> int:
    """Start a server process: forked by the zygote (which has NeMo Gym imported already, so a server starts in
    about a second instead of ~7-15 s), starting the zygote first if none runs; a plain process if that fails."""
    rt = runtime_dir()
    key = hashlib.sha256(f"{python}\0{LAUNCHER.read_text()}".encode()).hexdigest()[:10]
    sock_path = rt / f"zygote-{key}.sock"
    pid = _ask_zygote(sock_path, argv, log)
    if pid is not None:
        return pid
    with open(rt / f"zygote-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pid = _ask_zygote(sock_path, argv, log)
        if pid is not None:
            return pid
        sock_path.unlink(missing_ok=True)
        with open(rt / f"zygote-{key}.log", "wb") as zlog:
            zygote = subprocess.Popen(
                [str(python), str(LAUNCHER), "--zygote", str(sock_path), str(idle_exit_s)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=zlog,
                start_new_session=True,  # outlives the env that started it, shared by the next ones
                close_fds=True,
            )
        ready = zygote.stdout.readline()  # type: ignore[union-attr]  # after its imports
        zygote.stdout.close()  # type: ignore[union-attr]
        pid = _ask_zygote(sock_path, argv, log) if ready.startswith(b"{") else None
    if pid is not None:
        return pid
    with open(log, "wb") as out:  # no zygote: start the server as a process of its own
        return subprocess.Popen(
            [str(python), str(LAUNCHER), *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=out,
            start_new_session=True,
            close_fds=True,
        ).pid


def _stop_recorded(state_file: Path) -> None:
    """Kill the process a stale state file names (it may hang without answering) if it is our launcher."""
    try:
        pid = int(json.loads(state_file.read_text())["pid"])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, KeyError):
        return
    if str(LAUNCHER).encode() in cmdline:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # its own session: whatever it started (a local Ray, say) goes too


def log_path(name: str, config: Mapping[str, Any] | None = None, model_url: str | None = None) -> Path:
    """The server process's log (its stderr; rewritten at each start)."""
    return _paths(name, config, model_url)[2]


def server_pid(name: str, config: Mapping[str, Any] | None = None, model_url: str | None = None) -> int | None:
    """The PID of the running server process for ``name`` (and ``config``), if one answers."""
    state_file = _paths(name, config, model_url)[0]
    if _healthy(state_file) is None:
        return None
    return int(json.loads(state_file.read_text())["pid"])


def stop_server(name: str, config: Mapping[str, Any] | None = None, model_url: str | None = None) -> None:
    """Stop the server process for ``name`` (and ``config``), if any."""
    state_file, lock_file, _ = _paths(name, config, model_url)
    with open(lock_file, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _stop_recorded(state_file)
        state_file.unlink(missing_ok=True)


def nodelay_transport() -> httpx.HTTPTransport:
    """An httpx transport whose sockets set TCP_NODELAY. httpx writes a request's headers and body separately;
    with Nagle's algorithm the body then waits for the server's delayed ACK: ~40 ms per request on loopback."""
    return httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])


def drop_nulls(value: Any) -> Any:
    """``value`` without ``None`` entries in dicts, recursively: NeMo Gym's stored rows carry nulls its request
    models reject (422)."""
    if isinstance(value, Mapping):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


class NeMoGymClient:
    """One env's connection to a shared NeMo Gym server; see the module docstring.

    >>> client = NeMoGymClient("example_single_tool_call")  # doctest: +SKIP
    >>> client.new_session({"responses_create_params": {"input": "hi"}})  # doctest: +SKIP
    >>> client.post("/get_weather", {"city": "SF"}).json()["city"]  # doctest: +SKIP
    'SF'
    """

    def __init__(
        self,
        name: str,
        config: Mapping[str, Any] | None = None,
        *,
        model_url: str | None = None,
        timeout_s: float = 300.0,
        idle_exit_s: float = 600.0,
        start_timeout_s: float = 300.0,
    ) -> None:
        self.name = name
        self.config = dict(config or {})
        self.model_url = model_url
        self.timeout_s = timeout_s
        self.idle_exit_s = idle_exit_s
        self._client: httpx.Client | None = None
        self._pid = os.getpid()
        self.start_timeout_s = start_timeout_s
        self.base_url = self._start()

    def _start(self) -> str:
        return start_server(
            self.name,
            self.config,
            model_url=self.model_url,
            idle_exit_s=self.idle_exit_s,
            start_timeout_s=self.start_timeout_s,
        )

    def _http(self) -> httpx.Client:
        if self._client is None or self._pid != os.getpid():  # never share a connection across a fork
            self._client = httpx.Client(
                transport=nodelay_transport(), timeout=httpx.Timeout(self.timeout_s, connect=10.0)
            )
            self._pid = os.getpid()
        return self._client

    def new_session(
        self, seed_body: Mapping[str, Any] | None = None, route: str | None = "/seed_session"
    ) -> httpx.Response | None:
        """Forget the previous episode's session cookie; post ``seed_body`` to ``route`` (which sets the new one).
        A server that does not answer is looked up again (and restarted) once before this gives up."""
        self._http().cookies.clear()
        if route is None:
            return None
        try:
            return self.post(route, seed_body or {})
        except InfraError as exc:
            if not isinstance(exc.__cause__, httpx.TransportError):
                raise
        self.base_url = self._start()
        self._http().cookies.clear()
        return self.post(route, seed_body or {})

    def post(self, route: str, body: Mapping[str, Any]) -> httpx.Response:
        """POST JSON to ``route`` in this session; ``InfraError`` on a transport failure or a non-2xx answer."""
        try:
            reply = self._http().post(self.base_url + route, json=body)
        except httpx.TransportError as exc:
            raise InfraError(
                f"NeMo Gym server {self.name!r} unreachable at {route}: {type(exc).__name__}: {exc}"
            ) from exc
        if reply.status_code >= 400:
            raise ServerHTTPError(
                f"NeMo Gym server {self.name!r} answered {reply.status_code} at {route}: {reply.text[:500]}",
                reply.status_code,
                reply.text,
            )
        return reply

    def close(self) -> None:
        if self._client is not None and self._pid == os.getpid():
            self._client.close()
        self._client = None
