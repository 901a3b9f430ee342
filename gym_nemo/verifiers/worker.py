"""``VerifierWorker``: runs checks that must be bounded in time in a long-lived child process.

Some checkers cannot bound themselves: math-verify's timeouts use ``signal.alarm`` (they raise outside a main
thread and cannot stop a wedged C call) and reasoning-gym's scorers have none. The worker
(``_worker_main.py``) runs them in its own process under an address-space limit; every request has a
bound on the worker's CPU time (read from ``/proc``; so a loaded machine does not turn a slow but correct
check into a timeout, and the reward does not depend on what else runs) and a wall-time cap of
``WALL_FACTOR`` times that. A worker that overruns is killed (with its process group) and replaced on the
next request. A worker that dies mid-request is replaced and the request retried once; a second death is
reported as ``{"died": true}``. Only a worker that cannot start at all raises
:class:`~gym_nemo.core.errors.InfraError`.

One worker per process (:func:`default_worker`), shared by threads (requests are serialised) and replaced
in a forked child, which must not talk to its parent's worker.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from gym_nemo.core.errors import InfraError

MEMORY_MB = 4096
WALL_FACTOR = 3.0  # a request's wall-time cap, in multiples of its CPU-time bound
_POLL_S = 0.05  # how often a waiting request reads the worker's CPU time
_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
_MAIN = Path(__file__).with_name("_worker_main.py")


class _Overrun(Exception):
    """No reply within the time bound (the worker has been killed)."""


class _Died(Exception):
    """The worker exited before replying."""


class VerifierWorker:
    """A checker process serving one request at a time; see the module docstring."""

    def __init__(self, memory_mb: int = MEMORY_MB, startup_timeout_s: float = 60.0) -> None:
        self.memory_mb = memory_mb
        self.startup_timeout_s = startup_timeout_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner = os.getpid()
        self._buffer = b""
        self._loaded: set[str] = set()

    def call(self, op: str, timeout_s: float, **arguments: Any) -> dict[str, Any]:
        """Run handler ``op`` with ``arguments``. Returns its reply dict (``"error"`` if it raised), or
        ``{"timed_out": True}`` past ``timeout_s`` of the worker's CPU time (or ``WALL_FACTOR`` times that
        of wall time), or ``{"died": True}`` if the worker died twice on it."""
        with self._lock:
            for attempt in (1, 2):
                self._ensure_started()
                if op not in self._loaded:  # imports count against the startup bound, not the request's
                    self._load(op)
                try:
                    return self._request({"op": op, **arguments}, timeout_s)
                except _Overrun:
                    return {"timed_out": True}
                except _Died:
                    if attempt == 2:
                        return {"died": True}
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._kill()

    # ------------------------------------------------------------------ internals
    def _ensure_started(self) -> None:
        if self._owner != os.getpid():  # inherited through fork: that process belongs to the parent
            inherited = self._proc
            self._proc, self._buffer, self._loaded, self._owner = None, b"", set(), os.getpid()
            for stream in (inherited.stdin, inherited.stdout) if inherited is not None else ():
                with contextlib.suppress(OSError):
                    stream.close()  # only this process's copies; the parent's worker sees EOF when it exits
        if self._proc is not None and self._proc.poll() is None:
            return
        self._kill()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-P", str(_MAIN), str(self.memory_mb)],  # -P: not the script's dir on sys.path
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
            reply = self._read_line(time.monotonic() + self.startup_timeout_s)
        except (OSError, _Overrun, _Died) as exc:
            self._kill()
            raise InfraError(f"the verifier worker could not start: {type(exc).__name__} {exc}") from exc
        if not reply.get("ready"):
            self._kill()
            raise InfraError(f"the verifier worker sent {reply!r} instead of its ready line")

    def _load(self, op: str) -> None:
        try:
            reply = self._request({"op": "load", "handler": op}, self.startup_timeout_s)
        except (_Overrun, _Died) as exc:
            raise InfraError(f"the verifier worker could not load {op!r}: {type(exc).__name__}") from exc
        if not reply.get("ok"):
            raise InfraError(f"the verifier worker could not load {op!r}: {reply.get('error')}")
        self._loaded.add(op)

    def _request(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(request).encode() + b"\n")
            self._proc.stdin.flush()
            cpu = self._cpu_seconds()
            if cpu is None:  # no /proc: wall time only
                return self._read_line(time.monotonic() + timeout_s)
            return self._read_line(time.monotonic() + WALL_FACTOR * timeout_s, cpu + timeout_s)
        except OSError as exc:  # broken pipe: the worker is gone
            self._kill()
            raise _Died(str(exc)) from exc
        except (_Overrun, _Died):
            self._kill()
            raise

    def _cpu_seconds(self) -> float | None:
        """The worker's CPU time so far (user + system), or None where /proc cannot tell."""
        assert self._proc is not None
        try:
            with open(f"/proc/{self._proc.pid}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) * _TICK_S

    def _read_line(self, deadline: float, cpu_deadline: float | None = None) -> dict[str, Any]:
        """The worker's next reply line; ``_Overrun`` past ``deadline`` (monotonic) or, if given,
        ``cpu_deadline`` (the worker's CPU seconds)."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Overrun()
            if cpu_deadline is not None:
                cpu = self._cpu_seconds()
                if cpu is not None and cpu >= cpu_deadline:
                    raise _Overrun()
                remaining = min(remaining, _POLL_S)
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise _Died("the worker exited")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def _kill(self) -> None:
        proc, self._proc, self._buffer, self._loaded = self._proc, None, b"", set()
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


_default: VerifierWorker | None = None
_default_lock = threading.Lock()


def default_worker() -> VerifierWorker:
    """This process's worker (started on first use, killed at exit)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = VerifierWorker()
            atexit.register(_default.close)
        return _default
