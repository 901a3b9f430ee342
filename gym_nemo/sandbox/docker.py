"""``DockerSandbox``: a warm pool of locked-down containers, each running the gym_nemo fork server.

Every container is started once and kept warm: no network (``network_mode="none"``), read-only root, a
tmpfs ``/tmp``, a non-root user, ``cap_drop=ALL``, ``no-new-privileges``, pids/memory/CPU limits and a
CPU-time ulimit, optionally ``runtime="runsc"`` (gVisor). Inside, the ``forkserver`` package (its directory
mounted read-only from this package, so host and container always speak the same protocol) listens on a unix socket in a
per-container directory bind-mounted from the host: a call is one request over that persistent stream and
costs milliseconds, not a ``docker exec`` or ``docker run``. Inside the container the fork server adds
per-call rlimits, process-group kills, a seccomp filter and a fresh scratch dir.

Containers are shared machine-wide by configuration (labels + the socket directory), exit by themselves
after ``idle_exit_s`` without clients (``auto_remove``), and a container that stops answering is killed and
replaced. ``fresh_container_per_session=True`` gives each session a container of its own, removed when the
session closes (a fresh filesystem per episode).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

from gym_nemo.core.errors import MissingDependency, require
from gym_nemo.sandbox.base import Limits
from gym_nemo.sandbox.client import ForkServerBackend, ForkServerClient
from gym_nemo.sandbox.forkserver.callsetup import build_call_setup
from gym_nemo.sandbox.forkserver.protocol import read_frame_blocking
from gym_nemo.sandbox.local import FORKSERVER, runtime_dir, server_digest

DEFAULT_IMAGE = "gym-nemo-sandbox:1"
CONTAINER_UID = 1000
LABEL = "org.gym_nemo.pool"


def docker_unavailable_reason(image: str = DEFAULT_IMAGE) -> str | None:
    """Why the docker backend cannot run here (no SDK, no engine, no image), or None if it can."""
    try:
        docker = require("docker", what="the docker sandbox", extra="docker")
    except MissingDependency as exc:
        return str(exc)
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as exc:
        return f"no Docker engine answers ({type(exc).__name__}: {exc}); scripts/test.sh starts one as root"
    try:
        client.images.get(image)
    except Exception:
        return f"image {image} is not built; run sandbox/build_image.sh"
    return None


class _AttachedStream:
    """A container's attached stdin/stdout as a socket-like byte stream (Docker multiplexes the output:
    8-byte headers carry the stream and length; stderr frames are dropped)."""

    def __init__(self, raw: socket.socket) -> None:
        self.raw = raw
        self.buf = bytearray()

    def _exactly(self, n: int) -> bytes | None:
        data = bytearray()
        while len(data) < n:
            chunk = self.raw.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return bytes(data)

    def recv(self, n: int) -> bytes:
        while not self.buf:
            header = self._exactly(8)
            payload = None if header is None else self._exactly(int.from_bytes(header[4:8], "big"))
            if payload is None:
                return b""
            if header[0] == 1:
                self.buf += payload
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def sendall(self, data: bytes) -> None:
        self.raw.sendall(data)

    def settimeout(self, timeout: float | None) -> None:
        self.raw.settimeout(timeout)

    def close(self) -> None:
        self.raw.close()


class _Container:
    """One pooled container and this process's connection to its fork server."""

    def __init__(self, name: str, sock_path: Path, client: ForkServerClient | None = None) -> None:
        self.name = name
        self.sock_path = sock_path
        self.client = client  # set at start for attached containers
        self.lock = threading.Lock()

    def connect(self, deadline: float) -> ForkServerClient:
        while self.client is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.sock_path))
                self.client = ForkServerClient(sock)
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        return self.client


class DockerSandbox(ForkServerBackend):
    """Docker backend; see the module docstring. ``pool_size`` containers, ``slots`` calls each."""

    name = "docker"

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        image: str = DEFAULT_IMAGE,
        pool_size: int = 2,
        slots: int = 2,
        runtime: str | None = None,
        cpus: float = 1.0,
        pids_limit: int = 256,
        idle_exit_s: float = 120.0,
        fresh_container_per_session: bool = False,
        transport: str | None = None,
    ) -> None:
        import docker

        self.limits = limits or Limits()
        self.docker = docker.from_env(timeout=60)
        self.image = image
        self.image_id = self.docker.images.get(image).id
        self.pool_size = pool_size
        self.slots = slots
        self.runtime = runtime
        self.cpus = cpus
        self.pids_limit = pids_limit
        self.idle_exit_s = idle_exit_s
        self.fresh_container_per_session = fresh_container_per_session
        # "socket": the fork server listens on a bind-mounted unix socket (containers shared machine-wide).
        # "attach": it speaks over the container's attached stdin/stdout, one client per container; needed
        # with gVisor, whose sockets live in its own kernel and are not reachable through a bind mount.
        self.transport = transport or ("attach" if runtime == "runsc" else "socket")
        if self.transport not in ("socket", "attach"):
            raise ValueError(f"transport must be 'socket' or 'attach', got {transport!r}")
        server = server_digest()
        ident = json.dumps(
            [self.image_id, server, slots, self._settings(), repr(self.limits), self.transport], sort_keys=True
        )
        self.key = hashlib.sha256(ident.encode()).hexdigest()[:12]
        self.pool_dir = runtime_dir() / f"docker-{self.key}"
        self.pool_dir.mkdir(mode=0o700, exist_ok=True)
        self._containers: list[_Container] = []
        self._rr = itertools.count()
        self._pid = os.getpid()
        self._pool_lock = threading.Lock()
        self._info: dict[str, Any] | None = None

    # -- containers
    def _settings(self) -> dict[str, Any]:
        """Everything about a container but its name and mounts; its hash names the shared pool."""
        memory = f"{self.slots * self.limits.memory_mb + 256}m"  # room for every slot's address space
        return {
            "network_mode": "none",
            "read_only": True,
            "user": f"{CONTAINER_UID}:{CONTAINER_UID}",
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "pids_limit": self.pids_limit,
            "mem_limit": memory,
            "memswap_limit": memory,
            "nano_cpus": int(self.cpus * 1e9),
            "tmpfs": {"/tmp": "rw,exec,nosuid,nodev,size=512m,mode=1777"},  # exec: compiled C++ runs here
            "environment": {"LANG": "C.UTF-8"},
            "runtime": self.runtime,
        }

    @staticmethod
    def _call_setup_library() -> str | None:
        """``callsetup.c`` built on the host (once per version, cached in the runtime dir), for containers."""
        rt = str(runtime_dir())
        return build_call_setup(rt, rt)[0]

    def _start_container(self, pooled: bool = True) -> _Container:
        from docker.types import Ulimit

        name = f"gym-nemo-{self.key}-{os.urandom(4).hex()}"
        server = [
            "python3",
            "-I",
            "/opt/gym_nemo/forkserver",
            "--runtime-dir",
            "/tmp",
            "--slots",
            str(self.slots),
            "--base-uid",
            "0",
        ]
        if self.runtime == "runsc":
            # Under Debian's 2022 runsc the whole sandbox died (tests/test_sandbox.py, 12 sessions after the
            # other tests) with call processes forked ahead; forking each on demand, it does not.
            server += ["--ready", "0"]
        volumes = {str(FORKSERVER): {"bind": "/opt/gym_nemo/forkserver", "mode": "ro"}}
        library = self._call_setup_library()
        if library:  # built on the host once, not in every container (it needs only glibc >= 2.14)
            volumes[library] = {"bind": "/opt/gym_nemo/callsetup.so", "mode": "ro"}
            server += ["--call-setup-lib", "/opt/gym_nemo/callsetup.so"]
        host_dir = self.pool_dir / name
        if self.transport == "socket":
            host_dir.mkdir(mode=0o700)
            os.chown(host_dir, CONTAINER_UID, CONTAINER_UID)
            volumes[str(host_dir)] = {"bind": "/run/gym_nemo", "mode": "rw"}
            server += ["--socket", "/run/gym_nemo/fs.sock", "--idle-exit", str(self.idle_exit_s if pooled else 0)]
        container = self.docker.containers.create(
            self.image,
            command=server,
            name=name,
            auto_remove=True,
            stdin_open=self.transport == "attach",
            ulimits=[Ulimit(name="cpu", soft=86_400, hard=86_400), Ulimit(name="core", soft=0, hard=0)],
            volumes=volumes,
            labels={LABEL: self.key, "org.gym_nemo.image": self.image_id},
            **self._settings(),
        )
        client = None
        if self.transport == "attach":  # attach before start, so the server's ready frame is not missed
            raw = container.attach_socket(params={"stdin": 1, "stdout": 1, "stream": 1})._sock
            client = ForkServerClient(_AttachedStream(raw))
        container.start()
        if client is not None:
            client.sock.settimeout(60)
            ready = read_frame_blocking(client.sock)
            if not ready or not ready.get("ready"):
                self._remove(name)
                raise RuntimeError(f"the fork server in {name} did not start")
        return _Container(name, host_dir / "fs.sock", client)

    def _running(self) -> list[_Container]:
        found = self.docker.containers.list(filters={"label": f"{LABEL}={self.key}", "status": "running"})
        return [
            _Container(c.name, self.pool_dir / c.name / "fs.sock")
            for c in found
            if (self.pool_dir / c.name / "fs.sock").exists()
        ]

    def _pool(self) -> list[_Container]:
        if self._pid != os.getpid():  # never share the parent's connections after a fork
            self._containers, self._pid = [], os.getpid()
        with self._pool_lock:
            if len(self._containers) < self.pool_size:
                with open(self.pool_dir / "pool.lock", "w") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)  # one process at a time grows the shared pool
                    known = {c.name: c for c in self._containers}  # keep our open connections
                    if self.transport == "attach":  # attached containers are this process's own
                        pool = list(self._containers)
                    else:
                        pool = [known.get(c.name, c) for c in self._running()]
                        self._sweep_dirs({c.name for c in pool})
                    while len(pool) < self.pool_size:
                        pool.append(self._start_container())
                self._containers = pool[: self.pool_size]
            return list(self._containers)

    def _replace(self, dead: _Container) -> None:
        """Remove a failed container; the pool refills on the next pick."""
        self._remove(dead.name)
        with self._pool_lock:
            if dead in self._containers:
                self._containers.remove(dead)

    def _remove(self, name: str) -> None:
        with contextlib.suppress(Exception):  # already gone (auto_remove) is fine
            self.docker.containers.get(name).remove(force=True)
        shutil.rmtree(self.pool_dir / name, ignore_errors=True)

    def _sweep_dirs(self, running: set[str]) -> None:
        """Remove socket dirs of containers that exited on their own (idle); young ones may be starting."""
        for path in self.pool_dir.iterdir():
            if path.is_dir() and path.name not in running and time.time() - path.stat().st_mtime > 60:
                shutil.rmtree(path, ignore_errors=True)

    def _pick(self) -> _Container:
        pool = self._pool()
        start = next(self._rr)
        for i in range(len(pool)):  # prefer a container whose connection is free
            candidate = pool[(start + i) % len(pool)]
            if candidate.lock.acquire(blocking=False):
                candidate.lock.release()
                return candidate
        return pool[start % len(pool)]

    def _request(self, req: dict[str, Any], timeout_s: float, route: _Container | None = None) -> dict[str, Any]:
        """Send one request (to ``route``, a session's container, or any pooled one); a container that fails
        is replaced, and requests that are safe to repeat (a run, info, opening a session) are retried once
        on another container."""
        try:
            container = route or self._pick()
        except Exception as exc:  # the engine could not give us a container: infrastructure, not the code
            return {"infra_error": f"docker sandbox: no container: {type(exc).__name__}: {exc}"}
        for attempt in (0, 1):
            try:
                with container.lock:
                    client = container.connect(time.monotonic() + 30)
                    client.sock.settimeout(timeout_s + 15)  # the fork server kills the call at timeout_s
                    return client.request(req)
            except (OSError, ConnectionError) as exc:
                self._replace(container)
                if attempt == 1 or route is not None or req.get("op") not in ("run", "info", "session_open"):
                    return {"infra_error": f"docker sandbox container {container.name} failed: {exc}"}
                try:
                    container = self._pick()
                except Exception as pick_exc:
                    return {"infra_error": f"docker sandbox: no container: {type(pick_exc).__name__}: {pick_exc}"}
        raise AssertionError("unreachable")

    def _session_route(self) -> _Container:
        if self.fresh_container_per_session:
            return self._start_container(pooled=False)
        return self._pick()

    def _release_route(self, route: _Container) -> None:
        if self.fresh_container_per_session:
            self._remove(route.name)

    def _describe(self, reply: dict[str, Any]) -> dict[str, Any]:
        return {**reply, "image": self.image, "image_id": self.image_id, "runtime": self.runtime or "runc"}

    @property
    def version(self) -> str:
        """Names this sandbox in rollout records: the image's content digest and the runtime."""
        return f"docker:{self.image}@{self.image_id}:{self.runtime or 'runc'}"

    def enforced(self) -> dict[str, bool]:
        inside = dict(self.info()["enforced"])
        # What the container adds around the fork server's own per-call limits.
        inside.update(
            no_network=True, filesystem_isolation=True, unprivileged_uid=True, processes=True, pid_namespace=True
        )
        return inside

    def close(self) -> None:
        """Drop this process's connections; the shared containers exit when idle."""
        for container in self._containers:
            if container.client is not None and self._pid == os.getpid():
                container.client.close()
            container.client = None
        self._containers = []

    def remove_pool(self) -> None:
        """Remove every container of this configuration now (tests, benchmarks, shutdown)."""
        self.close()
        for c in self.docker.api.containers(all=True, filters={"label": f"{LABEL}={self.key}"}):
            self._remove(c["Id"])  # by id, without inspecting: some may be removing themselves right now
