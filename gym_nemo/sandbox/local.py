"""``LocalSandbox``: the embedded default backend, a client of one warm fork-server daemon per machine.

The first ``LocalSandbox`` on a machine starts the daemon (the ``forkserver`` package on a unix socket in a private
runtime directory, guarded by a file lock so concurrent env workers start exactly one); every env process
on the machine then shares it, so 64 vector-env workers use one pool, not 64. The daemon exits after
``idle_exit_s`` seconds without clients. What each call gets (namespaces, chroot, seccomp, uid per slot,
rlimits, timeouts, output caps) is described in ``forkserver``; ``enforced()`` reports what this host
actually allows.

Untrusted code runs on a Python 3 whose standard library every uid can read (the one running gym_nemo,
or the system's ``/usr/bin/python3`` when that one is private), with the standard library only: no
site-packages, so nothing installed for gym_nemo, verifier data included, is importable from the sandbox.
Use the docker backend for an image with numpy and friends.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import os
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from gym_nemo.sandbox import forkserver
from gym_nemo.sandbox.base import Limits
from gym_nemo.sandbox.client import ForkServerBackend, ForkServerClient

FORKSERVER = Path(forkserver.__file__).parent  # run as a directory: python -I -S FORKSERVER ...


def server_digest() -> str:
    """What the server code is (every source file of the package, C included): a daemon or container runs
    the version it started with."""
    digest = hashlib.sha256()
    for path in sorted(FORKSERVER.iterdir()):
        if path.suffix in (".py", ".c", ".h"):
            digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def runtime_dir() -> Path:
    """A private per-user directory for daemon sockets, locks and logs."""
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    path = Path(base) / f"gym_nemo-{os.geteuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    if path.stat().st_uid != os.geteuid() or path.stat().st_mode & 0o077:
        raise PermissionError(f"{path} must be owned by uid {os.geteuid()} with mode 0700")
    return path


def _readable_by_everyone(path: str) -> bool:
    """Every directory on the way to ``path`` can be entered and ``path`` listed by any uid."""
    parts = Path(path).resolve().parts
    for i in range(1, len(parts) + 1):
        mode = os.stat(os.path.join(*parts[:i])).st_mode
        if mode & 0o005 != 0o005:
            return False
    return True


def sandbox_interpreter() -> str:
    """The interpreter the fork server runs: this one, unless its standard library is private.

    Sandboxed code runs as an unprivileged uid and imports stdlib modules lazily, so the stdlib must be
    readable by every uid (a pyenv install under /root is not); then the system Python is used instead.
    """
    own = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    if _readable_by_everyone(sysconfig.get_paths()["stdlib"]):
        return own
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate) and _readable_by_everyone(os.path.dirname(os.path.realpath(candidate))):
            return candidate
    return own


class LocalSandbox(ForkServerBackend):
    """Hardened local backend. ``namespaces=False`` forces the weaker process-only mode (for tests);
    ``call_setup="python"`` the fork server's Python path, which it takes anyway where no C compiler is
    found (``info()["call_setup"]`` says which runs)."""

    name = "local"

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        slots: int | None = None,
        namespaces: bool = True,
        base_uid: int = 61000,
        idle_exit_s: float = 60.0,
        python: str | None = None,
        call_setup: str = "auto",
    ) -> None:
        self.limits = limits or Limits()
        self.slots = slots or max(2, os.cpu_count() or 2)
        self.namespaces = namespaces
        self.base_uid = base_uid
        self.idle_exit_s = idle_exit_s
        self.python = python or sandbox_interpreter()
        if call_setup not in ("auto", "python"):
            raise ValueError(f"call_setup must be 'auto' or 'python', not {call_setup!r}")
        self.call_setup = call_setup
        self._client: ForkServerClient | None = None
        self._pid = os.getpid()
        self._info: dict[str, Any] | None = None

    def another_connection(self) -> LocalSandbox:
        """A sandbox like this one with its own connection to the same daemon: one connection carries one
        request at a time, so concurrent runs (e.g. one program's tests at once) need one each."""
        other = copy.copy(self)
        other._client, other._info = None, self._info
        return other

    # -- daemon management
    def _key(self) -> str:
        """Daemons are shared by configuration: same interpreter, server code and settings, same daemon."""
        ident = json.dumps([self.python, server_digest(), self.slots, self.namespaces, self.base_uid, self.call_setup])
        return hashlib.sha256(ident.encode()).hexdigest()[:12]

    def _connect(self) -> ForkServerClient:
        if self._client is not None and self._pid == os.getpid():
            return self._client
        self._client, self._pid = None, os.getpid()  # after a fork, never share the parent's connection
        rt = runtime_dir()
        key = self._key()
        sock_path = rt / f"fs-{key}.sock"
        client = self._try_connect(sock_path)
        if client is None:
            with open(rt / f"fs-{key}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                client = self._try_connect(sock_path) or self._start_daemon(rt, key, sock_path)
        self._client = client
        return client

    @staticmethod
    def _try_connect(path: Path) -> ForkServerClient | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
        except OSError:
            sock.close()
            return None
        return ForkServerClient(sock)

    def _start_daemon(self, rt: Path, key: str, sock_path: Path) -> ForkServerClient:
        sock_path.unlink(missing_ok=True)
        argv = [
            self.python,
            "-I",
            "-S",
            str(FORKSERVER),
            "--socket",
            str(sock_path),
            "--runtime-dir",
            str(rt),
            "--slots",
            str(self.slots),
            "--base-uid",
            str(self.base_uid),
            "--idle-exit",
            str(self.idle_exit_s),
        ]
        if not self.namespaces:
            argv.append("--no-namespaces")
        if self.call_setup != "auto":
            argv += ["--call-setup", self.call_setup]
        with open(rt / f"fs-{key}.log", "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                close_fds=True,
            )
        line = proc.stdout.readline()  # type: ignore[union-attr]
        proc.stdout.close()  # type: ignore[union-attr]
        if not line.startswith(b"{"):
            proc.kill()
            proc.wait()
            raise RuntimeError(f"the fork server did not start; see {rt / f'fs-{key}.log'}")
        client = self._try_connect(sock_path)
        if client is None:
            raise RuntimeError(f"the fork server started but {sock_path} refuses connections")
        return client

    def _request(self, req: dict[str, Any], timeout_s: float = 0, route: Any = None) -> dict[str, Any]:
        for attempt in (0, 1):
            try:
                return self._connect().request(req)
            except (ConnectionError, OSError) as exc:
                if self._client is not None:
                    self._client.close()
                self._client = None
                if attempt == 1 or req.get("op") not in ("run", "info", "session_open"):
                    return {"infra_error": f"fork server unreachable: {exc}"}
        raise AssertionError("unreachable")

    @property
    def version(self) -> str:
        """Names this sandbox in rollout records: backend, isolation mode, sandbox Python."""
        info = self.info()
        return f"local:{info['mode']}:python{info['python']}"

    def close(self) -> None:
        if self._client is not None and self._pid == os.getpid():
            self._client.close()
        self._client = None
