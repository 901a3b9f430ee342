"""Start and stop real ``gym-nemo serve`` processes on loopback for the serve/remote/ray tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx


@dataclass
class Served:
    """A running server process and its address."""

    proc: subprocess.Popen[str]
    url: str
    port: int

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int:
        """Signal the server (by its PID) and wait for it to exit; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def start_server(env_id: str, *args: str, port: int = 0, timeout_s: float = 60.0) -> Served:
    """``python -m gym_nemo.cli serve ENV_ID --port PORT ...``; returns once ``/health`` answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gym_nemo.cli", "serve", env_id, "--host", "127.0.0.1", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"server did not start: {line}{proc.stdout.read()[-2000:]}")
    url = line.rsplit(" ", 1)[1].strip()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stdout.read()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return Served(proc, url, int(url.rsplit(":", 1)[1]))
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server at {url} did not answer /health within {timeout_s} s")


@contextlib.contextmanager
def served(env_id: str, *args: str, port: int = 0) -> Iterator[Served]:
    server = start_server(env_id, *args, port=port)
    try:
        yield server
    finally:
        server.stop()
