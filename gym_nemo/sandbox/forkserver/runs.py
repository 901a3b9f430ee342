"""What a worker does for one call: ``Run`` (a ``run`` request) and ``SessionRun`` (a ``session_run``).

Each spawns or reuses a call process, feeds it the code and stdin without blocking the loop, collects its
output under the cap, enforces the wall timeout (the zygote kills the call's process group) and replies
with ``outcome``: the output and a flag for each limit the call hit.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

from .eventloop import EventLoop
from .limits import limits_for
from .protocol import HEADER, INFRA_MARK, READY_MARK


class Server(Protocol):
    """What a run needs of its worker (``worker.Server``), named here so this module does not import it."""

    loop: EventLoop
    zygote: Any  # worker.ZygoteHandle: spawn(spec, fds, on_exit) -> pid, kill(pid), on_exit

    def uid_for(self, index: int) -> int | None: ...

    def make_scratch(self, uid: int | None) -> str | None: ...

    def drop_scratch(self, scratch: str | None) -> None: ...

    def end_session(self, sid: str) -> None: ...


class _StdinFeeder:
    """Writes a call's stdin without blocking the loop; needs ``loop``, ``stdin`` (bytes left), ``stdin_w``."""

    loop: EventLoop
    stdin: memoryview
    stdin_w: int

    def _feed_stdin(self) -> None:
        try:
            while self.stdin:
                self.stdin = self.stdin[os.write(self.stdin_w, self.stdin) :]
        except BlockingIOError:
            self.loop.add_writer(self.stdin_w, self._feed_stdin)
            return
        except OSError:  # the call closed its stdin or exited: the rest is not wanted
            pass
        self._close_stdin()

    def _close_stdin(self) -> None:
        if self.stdin_w >= 0:
            self.loop.remove_writer(self.stdin_w)
            os.close(self.stdin_w)
            self.stdin_w = -1


class Run(_StdinFeeder):
    """One ``run`` call: spawn, feed the code and stdin, collect output under the cap, enforce the wall
    timeout, reply. The code goes ahead of stdin on the call's stdin pipe as one frame, so requests to the
    zygote stay small whatever the code's size."""

    def __init__(self, server: Server, req: dict, slot: int, done: Callable[[dict], None]) -> None:
        self.server, self.loop, self.done = server, server.loop, done
        limits = limits_for(req)
        self.cap = int(limits["max_output_bytes"])
        uid = server.uid_for(slot)
        self.scratch = server.make_scratch(uid)
        stdin_r, self.stdin_w = os.pipe2(os.O_CLOEXEC)
        self.out_r, out_w = os.pipe2(os.O_CLOEXEC)
        self.err_r, err_w = os.pipe2(os.O_CLOEXEC)
        self.start = time.monotonic()
        language = req.get("language", "python")
        spec = {"op": "run", "language": language, "limits": limits, "uid": uid, "scratch": self.scratch}
        self.status: int | None = None
        self.exited = False
        try:
            self.pid = server.zygote.spawn(spec, [stdin_r, out_w, err_w], self._on_exit)
        except BaseException:
            for fd in (self.stdin_w, self.out_r, self.err_r):
                os.close(fd)
            server.drop_scratch(self.scratch)
            raise
        finally:
            for fd in (stdin_r, out_w, err_w):
                os.close(fd)
        self.bufs = {self.out_r: bytearray(), self.err_r: bytearray()}
        self.ready = False  # READY_MARK seen
        self.open_fds = {self.out_r, self.err_r}
        self.truncated = self.timed_out = self.finished = False
        self.timers: list[list] = []
        for fd in self.open_fds:
            os.set_blocking(fd, False)
            self.loop.add_reader(fd, lambda fd=fd: self._on_read(fd))
        code = req.get("code", "").encode("utf-8", "surrogatepass")
        stdin = req.get("stdin", "").encode("utf-8", "replace")
        self.stdin = memoryview(HEADER.pack(len(code)) + code + stdin)
        os.set_blocking(self.stdin_w, False)
        self._feed_stdin()
        self.timers.append(self.loop.call_later(float(limits["timeout_s"]), self._on_timeout))

    def _on_read(self, fd: int) -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            self.loop.remove_reader(fd)
            self.open_fds.discard(fd)
            self._finish_if_done()
            return
        if fd == self.err_r and not self.ready and chunk.startswith(READY_MARK):  # one atomic write, first
            self.ready, chunk = True, chunk[len(READY_MARK) :]
        buf = self.bufs[fd]
        room = self.cap - len(buf)
        buf += chunk[: max(room, 0)]
        if len(chunk) > room and not self.truncated:
            self.truncated = True
            self.server.zygote.kill(self.pid)

    def _on_exit(self, status: int | None) -> None:
        """Reaped by the zygote, which killed the call's process group first (``None``: the zygote died)."""
        self.exited, self.status = True, status
        self._finish_if_done()

    def _on_timeout(self) -> None:
        self.timed_out = not self.truncated
        self.server.zygote.kill(self.pid)
        self.timers.append(self.loop.call_later(5, self._finish))  # a call that will not die is given up on

    def _finish_if_done(self) -> None:
        if not self.open_fds and self.exited:
            self._finish()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        for timer in self.timers:
            self.loop.cancel(timer)
        self._close_stdin()
        for fd in (self.out_r, self.err_r):
            self.loop.remove_reader(fd)
            os.close(fd)
        if not self.exited:  # given up on: forget it, the zygote reaps it when it dies
            self.server.zygote.on_exit.pop(self.pid, None)
        self.server.drop_scratch(self.scratch)
        duration = time.monotonic() - self.start
        rc = None if self.status is None else os.waitstatus_to_exitcode(self.status)
        stderr = bytes(self.bufs[self.err_r])
        if self.exited and self.status is None:  # not the code's doing: it was killed with its zygote
            result = {"infra_error": "the fork server's zygote died; the call was killed", "duration_s": duration}
        elif not self.ready:
            detail = stderr.split(INFRA_MARK, 1)[-1].decode("utf-8", "replace").strip()
            if self.timed_out:
                detail = "sandbox setup timed out"
            result = {
                "infra_error": f"sandbox setup failed: {detail[-2000:] or f'exit status {rc}'}",
                "duration_s": duration,
            }
        else:
            result = outcome(bytes(self.bufs[self.out_r]), stderr, rc, self.timed_out, self.truncated, duration)
        self.done(result)


class SessionRun(_StdinFeeder):
    """One ``session_run``: hand the session process new std streams and the code, collect its output."""

    def __init__(self, server: Server, sid: str, sess: dict, req: dict, done: Callable[[dict], None]) -> None:
        self.server, self.loop, self.sid, self.sess, self.done = server, server.loop, sid, sess, done
        limits = {**sess["limits"], **{k: v for k, v in (req.get("limits") or {}).items() if v is not None}}
        self.cap = int(limits["max_output_bytes"])
        stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
        self.out_r, out_w = os.pipe2(os.O_CLOEXEC)
        self.err_r, err_w = os.pipe2(os.O_CLOEXEC)
        self.sock: socket.socket = sess["sock"]
        self.start = time.monotonic()
        try:
            socket.send_fds(self.sock, [json.dumps({"code": req.get("code", "")}).encode()], [stdin_r, out_w, err_w])
        finally:
            for fd in (stdin_r, out_w, err_w):
                os.close(fd)
        self.bufs = {self.out_r: bytearray(), self.err_r: bytearray()}
        self.truncated = self.timed_out = self.finished = False
        sess["running"] = self
        for fd in (self.out_r, self.err_r):
            os.set_blocking(fd, False)
            self.loop.add_reader(fd, lambda fd=fd: self._on_read(fd))
        self.loop.add_reader(self.sock.fileno(), self._on_reply)
        self.stdin_w = stdin_w
        self.stdin = memoryview(req.get("stdin", "").encode("utf-8", "replace"))
        os.set_blocking(stdin_w, False)
        self._feed_stdin()
        self.timer = self.loop.call_later(float(limits["timeout_s"]), self._on_timeout)

    def _keep(self, fd: int, chunk: bytes) -> None:
        room = self.cap - len(self.bufs[fd])
        self.bufs[fd] += chunk[: max(room, 0)]
        self.truncated = self.truncated or len(chunk) > room

    def _on_read(self, fd: int) -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            self.loop.remove_reader(fd)
            return
        self._keep(fd, chunk)
        if self.truncated:
            self.finish(None)

    def _on_reply(self) -> None:
        try:
            data = self.sock.recv(65536)
        except OSError:
            data = b""
        self.finish(data)

    def _on_timeout(self) -> None:
        self.timed_out = True
        self.finish(None)

    def finish(self, data: bytes | None) -> None:
        """``data``: the session's reply, or None when the run timed out, flooded or the session died."""
        if self.finished:
            return
        self.finished = True
        self.sess.pop("running", None)
        self.loop.cancel(self.timer)
        self.loop.remove_reader(self.sock.fileno())
        self._close_stdin()
        for fd in (self.out_r, self.err_r):  # drain what the run wrote before it answered
            self.loop.remove_reader(fd)
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                self._keep(fd, chunk)
            os.close(fd)
        duration = time.monotonic() - self.start
        rc = json.loads(data)["exit_code"] if data else None
        result = outcome(
            bytes(self.bufs[self.out_r]), bytes(self.bufs[self.err_r]), rc, self.timed_out, self.truncated, duration
        )
        if rc is None:  # timed out, flooded or died: the session process must go and its state is lost
            self.server.end_session(self.sid)
            result["session_lost"] = True
            if not (self.timed_out or self.truncated):
                result["stderr"] += "\n[the session process died (killed by a limit or a crash)]"
        self.done(result)


def outcome(stdout: bytes, stderr: bytes, rc: int | None, timed_out: bool, truncated: bool, duration: float) -> dict:
    """The reply for one finished run, with a flag for each limit it hit."""
    killed = timed_out or truncated
    stderr_text = stderr.decode("utf-8", "replace")
    tail = stderr_text[-4000:]
    return {
        "stdout": stdout.decode("utf-8", "replace"),
        "stderr": stderr_text,
        "exit_code": None if killed else rc,
        "timed_out": timed_out,
        "duration_s": duration,
        "output_truncated": truncated,
        "memory_exceeded": any(m in tail for m in ("MemoryError", "std::bad_alloc", "Cannot allocate memory")),
        "cpu_time_exceeded": not killed and rc in (-signal.SIGXCPU, -signal.SIGKILL),
        "file_size_exceeded": rc == -signal.SIGXFSZ or "File too large" in tail,
    }
