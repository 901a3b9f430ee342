"""``LocalSandbox``: run untrusted code in a limited child process, no daemon needed.

Per run: a fresh scratch directory (the working directory and ``$HOME``/``$TMPDIR``), its own session and
process group, a scrubbed environment, rlimits (CPU seconds, address space, file size, open files,
processes, no core dumps), a wall timeout enforced by killing the whole process group, and stdout/stderr
capped (the process is killed as soon as it prints past the cap, so ``print`` in a loop costs no
memory). After the run the process group is killed, so nothing it started keeps running.

``enforced()`` says which protections hold on this host: ``RLIMIT_NPROC`` does not bind uid 0, and this
backend has no network or filesystem isolation; the hardened backends (fork servers with namespaces
and seccomp, Docker) add those.
"""

from __future__ import annotations

import contextlib
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from gym_nemo.sandbox.base import ExecResult, Limits

SCRATCH_PREFIX = "gym_nemo_sbx_"


def _interpreters(python: str) -> dict[str, list[str]]:
    return {
        "python": [python, "-I", "-B", "main.py"],
        "bash": ["/bin/bash", "--noprofile", "--norc", "main.sh"],
    }


def _scrubbed_env(scratch: str) -> dict[str, str]:
    """Only what programs need; nothing of the host's environment (tokens, keys) leaks in."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": scratch,
        "TMPDIR": scratch,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _limit_setter(limits: Limits, timeout: float, memory_mb: int):
    cpu = int(timeout) + 1

    def set_limits() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        memory = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        file_size = limits.max_file_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.max_open_files, limits.max_open_files))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return set_limits


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class LocalSandbox:
    """Process-per-run sandbox with rlimits; see the module docstring for what it enforces."""

    name = "local"

    def __init__(self, limits: Limits | None = None, python: str | None = None) -> None:
        self.limits = limits or Limits()
        self.python = python or sys.executable

    def enforced(self) -> dict[str, bool]:
        return {
            "wall_timeout": True,
            "cpu_time": True,
            "memory": True,
            "file_size": True,
            "open_files": True,
            "processes": os.geteuid() != 0,  # RLIMIT_NPROC does not apply to root
            "output_cap": True,
            "scrubbed_env": True,
            "scratch_dir": True,
            "kill_process_group": True,
            "unprivileged_uid": os.geteuid() != 0,
            "no_network": False,
            "filesystem_isolation": False,
            "seccomp": False,
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
        commands = _interpreters(self.python)
        if language not in commands:
            raise ValueError(f"unsupported language {language!r}; supported: {', '.join(commands)}")
        timeout = float(timeout if timeout is not None else self.limits.timeout_s)
        memory_mb = int(memory_mb if memory_mb is not None else self.limits.memory_mb)
        try:
            scratch = tempfile.mkdtemp(prefix=SCRATCH_PREFIX)
        except OSError as exc:
            return ExecResult(infra_error=f"cannot create a scratch directory: {exc}")
        try:
            argv = commands[language]
            with open(os.path.join(scratch, argv[-1]), "w", encoding="utf-8", errors="replace") as fh:
                fh.write(code)
            stdin_path = os.path.join(scratch, ".stdin")
            with open(stdin_path, "w", encoding="utf-8", errors="replace") as fh:
                fh.write(stdin)
            return self._execute(argv, scratch, stdin_path, timeout, memory_mb)
        except OSError as exc:
            return ExecResult(infra_error=f"sandbox failure: {type(exc).__name__}: {exc}")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def close(self) -> None:
        """Nothing is held between runs."""

    def _execute(self, argv: list[str], scratch: str, stdin_path: str, timeout: float, memory_mb: int) -> ExecResult:
        cap = self.limits.max_output_bytes
        start = time.monotonic()
        with open(stdin_path, "rb") as stdin_file:
            proc = subprocess.Popen(
                argv,
                cwd=scratch,
                env=_scrubbed_env(scratch),
                stdin=stdin_file,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                preexec_fn=_limit_setter(self.limits, timeout, memory_mb),
                close_fds=True,
            )
        out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()  # type: ignore[union-attr]
        buffers: dict[int, bytearray] = {out_fd: bytearray(), err_fd: bytearray()}
        timed_out = truncated = False
        deadline = start + timeout
        # A pidfd becomes readable when the main process exits, so the loop wakes at once even while
        # a straggler it left behind still holds the output pipes open.
        exit_fd = os.pidfd_open(proc.pid)
        with selectors.DefaultSelector() as selector:
            for pipe in (proc.stdout, proc.stderr):
                selector.register(pipe, selectors.EVENT_READ)  # type: ignore[arg-type]
            selector.register(exit_fd, selectors.EVENT_READ)
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                for key, _ in selector.select(remaining):
                    if key.fd == exit_fd:
                        # Kill what the main process left behind; the pipes then reach EOF.
                        selector.unregister(exit_fd)
                        _kill_group(proc.pid)
                        continue
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        selector.unregister(key.fileobj)
                        continue
                    buf = buffers[key.fd]
                    if len(buf) + len(chunk) > cap:
                        buf.extend(chunk[: cap - len(buf)])
                        truncated = True
                    else:
                        buf.extend(chunk)
                if truncated:
                    break
        os.close(exit_fd)
        _kill_group(proc.pid)
        proc.wait()
        duration = time.monotonic() - start
        for pipe in (proc.stdout, proc.stderr):
            pipe.close()  # type: ignore[union-attr]

        stdout = buffers[out_fd].decode("utf-8", "replace")
        stderr = buffers[err_fd].decode("utf-8", "replace")
        rc = proc.returncode
        killed_by_us = timed_out or truncated
        exit_code = None if killed_by_us else rc
        return ExecResult(
            stdout=stdout,
            stderr=stderr,
            exit_code=exit_code,
            timed_out=timed_out,
            duration_s=duration,
            output_truncated=truncated,
            memory_exceeded="MemoryError" in stderr[-2000:] or "Cannot allocate memory" in stderr[-2000:],
            cpu_time_exceeded=not killed_by_us and rc in (-signal.SIGXCPU, -signal.SIGKILL),
            file_size_exceeded=rc == -signal.SIGXFSZ or "File too large" in stderr[-2000:],
        )
