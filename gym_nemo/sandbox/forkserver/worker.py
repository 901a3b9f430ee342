"""A worker: one of the daemon's pre-forked processes, an event loop over its clients' connections.

Each worker serves whichever clients it accepts on the daemon's shared listening socket (or the one
stdio client), runs up to ``slots`` calls at once (each slot its own uid, so RLIMIT_NPROC is per call),
keeps sessions, and starts one zygote (``ZygoteHandle``), which forks every call process for it; the
worker never forks calls itself (see ``zygote``). It is a child subreaper: orphans of a dead zygote come
back to it, and where the zygote cannot adopt orphans (gVisor) it sweeps them itself.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable

from . import abi
from .eventloop import EventLoop
from .isolation import Isolation
from .kernel import PR_SET_CHILD_SUBREAPER, PR_SET_DUMPABLE, fork_bare, kill, killpg, prctl, reap_all, sweep_orphans
from .limits import limits_for
from .protocol import HEADER, MAX_FRAME, decode_body, encode_frame
from .runs import Run, SessionRun


class ZygoteHandle:
    """The worker's handle on its zygote (see ``zygote``): spawn calls, kill them, hear of exits. ``script``
    is the zygote's entry point, the package compiled into the daemon's runtime dir (``daemon``)."""

    def __init__(self, iso: Isolation, loop: EventLoop, ready_calls: int, script: str) -> None:
        self.iso, self.loop, self.ready_calls, self.script = iso, loop, ready_calls, script
        self.on_exit: dict[int, Callable[[int | None], None]] = {}  # pid -> callback(wait status | None)
        self._exits: list[list[int]] = []
        self._start()

    def _start(self) -> None:
        """Start a fresh interpreter as the zygote: forked from this worker it would carry ~5 MB of the
        daemon's and worker's heap that every call's fork then copies and every exit tears down (~40%
        more memory mapped, ~20% of a call's CPU is fork + exit)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        flags = [flag for flag, on in (("-I", sys.flags.isolated), ("-S", sys.flags.no_site)) if on]
        argv = [
            sys.executable,
            *flags,
            self.script,
            "--zygote",
            str(theirs.fileno()),
            self.iso.state(),
            str(self.ready_calls),
        ]
        pid = fork_bare()
        if pid == 0:
            try:
                ours.close()
                os.set_inheritable(theirs.fileno(), True)
                os.execv(sys.executable, argv)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(1)
        theirs.close()
        self.pid, self.sock = pid, ours
        hello = ours.recv(abi.PACKET)
        if not hello:
            raise RuntimeError("the zygote exited at start (see the fork server's log)")
        # Where the zygote cannot adopt orphans, they are re-parented to this worker, which sweeps them.
        self.sweeps = not self.iso.namespaces and not json.loads(hello)["subreaper"]
        self.loop.add_reader(ours.fileno(), self._on_message)

    def spawn(self, req: dict, fds: list[int], on_exit) -> int:
        """Fork a call process for ``req`` (the child gets ``fds``); ``on_exit(status)`` runs from the loop
        once it was reaped (``None``: the zygote died, and the call with it)."""
        try:
            socket.send_fds(self.sock, [json.dumps(req).encode()], fds)
            while True:
                msg = self.sock.recv(abi.PACKET)
                if not msg:
                    raise ConnectionError("the zygote exited")
                reply = json.loads(msg)
                if "exits" not in reply:
                    break
                self._exits += reply["exits"]  # delivered from the loop, not inside our caller
        except OSError:
            self._restart()
            raise
        if self._exits:
            self.loop.call_later(0, self._deliver)
        if "error" in reply:
            raise OSError(f"the zygote could not fork: {reply['error']}")
        self.on_exit[reply["pid"]] = on_exit
        return reply["pid"]

    def kill(self, pid: int) -> None:
        """SIGKILL a call's process group (race-free: the zygote does it only while the pid is its call's)."""
        with contextlib.suppress(OSError):
            self.sock.send(json.dumps({"kill": pid}).encode())

    def _on_message(self) -> None:
        try:
            msg = self.sock.recv(abi.PACKET, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            msg = b""
        if not msg:
            self._restart()
            return
        self._exits += json.loads(msg).get("exits", [])
        self._deliver()

    def _deliver(self) -> None:
        exits, self._exits = self._exits, []
        if exits and self.sweeps:
            sweep_orphans({self.pid})
        for pid, status in exits:
            callback = self.on_exit.pop(pid, None)
            if callback is not None:
                callback(status)

    def _restart(self) -> None:
        """The zygote died (it never should): its calls are gone; tell their owners, start a new one."""
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        lost, self.on_exit = self.on_exit, {}
        for pid in lost:  # re-parented to us (a subreaper) and not reaped yet, so the ids are still theirs
            killpg(pid)
        reap_all()
        for callback in lost.values():
            callback(None)
        self._start()

    def stop(self) -> None:
        """Hang up: the zygote kills what is left and exits; wait for it (bounded)."""
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(self.pid, os.WNOHANG)[0] == self.pid:
                    return
            time.sleep(0.005)
        kill(self.pid, signal.SIGKILL)


class Connection:
    """One client's framed request/reply stream (a unix socket, or stdin/stdout in stdio mode)."""

    def __init__(self, server: Server, rfd: int, wfd: int, owner: object = None, on_close=None) -> None:
        self.server = server
        self.rfd, self.wfd = rfd, wfd
        self.owner = owner  # keeps the socket object (and so its fd) alive
        self.on_close = on_close
        self.inbox = bytearray()
        self.outbox = bytearray()
        self.closed = False
        self.sessions: set[str] = set()
        server.clients += 1
        server.loop.add_reader(rfd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.rfd, 1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        self.inbox += data
        while len(self.inbox) >= HEADER.size:
            (length,) = HEADER.unpack_from(self.inbox)
            if length > MAX_FRAME:
                self.close()
                return
            if len(self.inbox) < HEADER.size + length:
                break
            body = bytes(self.inbox[HEADER.size : HEADER.size + length])
            del self.inbox[: HEADER.size + length]
            try:
                req = decode_body(body)
            except ValueError:
                self.close()
                return
            self.server.dispatch(req, self)

    def send(self, reply: dict) -> None:
        if self.closed:
            return
        self.outbox += encode_frame(reply)
        self._flush()

    def _flush(self) -> None:
        try:
            sent = os.write(self.wfd, self.outbox)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close()
            return
        del self.outbox[:sent]
        if self.outbox:
            self.server.loop.add_writer(self.wfd, self._flush)
        else:
            self.server.loop.remove_writer(self.wfd)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        loop = self.server.loop
        loop.remove_reader(self.rfd)
        loop.remove_writer(self.wfd)
        for sid in list(self.sessions):  # a client that goes away takes its sessions with it
            self.server.end_session(sid)
        if self.owner is not None:
            self.owner.close()
        self.server.clients -= 1
        self.server.last_activity = time.monotonic()
        if self.on_close is not None:
            self.on_close()


class Server:
    """The requests of one daemon process: calls bounded by slots, sessions, info, shutdown."""

    def __init__(
        self,
        iso: Isolation,
        slots: range,
        idle_exit_s: float,
        session_uids: range,
        ready_calls: int,
        zygote_script: str,
    ) -> None:
        self.iso = iso
        self.loop = EventLoop()
        self.zygote = ZygoteHandle(iso, self.loop, ready_calls, zygote_script)
        # Slots bound how many calls execute at once; each has its own uid, so RLIMIT_NPROC is per call.
        self.free_slots = list(slots)
        self.waiting: collections.deque = collections.deque()  # (start(slot), ...) for calls awaiting a slot
        # Sessions idle between runs, so they hold a uid of their own (not a slot) for their lifetime and
        # take a slot only while a run executes.
        self.session_uids = list(session_uids)
        self.sessions: dict[str, dict] = {}
        self.clients = 0
        self.idle_exit_s = idle_exit_s
        self.last_activity = time.monotonic()

    def uid_for(self, index: int) -> int | None:
        return self.iso.base_uid + index if self.iso.root and self.iso.base_uid > 0 else None

    def make_scratch(self, uid: int | None) -> str | None:
        """Without namespaces, a call's scratch dir on the host (with them, a fresh tmpfs in the call)."""
        if self.iso.namespaces:
            return None
        scratch = tempfile.mkdtemp(dir=self.iso.scratch_base)
        if uid:
            os.chown(scratch, uid, uid)
        return scratch

    @staticmethod
    def drop_scratch(scratch: str | None) -> None:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)

    # -- slots
    def _with_slot(self, start) -> None:
        self.waiting.append(start)
        while self.free_slots and self.waiting:
            slot = self.free_slots.pop()
            try:
                self.waiting.popleft()(slot)
            except Exception:
                self.free_slots.append(slot)
                raise

    def _release(self, slot: int) -> None:
        self.free_slots.append(slot)
        while self.free_slots and self.waiting:
            self.waiting.popleft()(self.free_slots.pop())

    # -- dispatch
    def dispatch(self, req: dict, conn: Connection) -> None:
        self.last_activity = time.monotonic()
        rid = req.get("id")

        def reply(result: dict) -> None:
            result["id"] = rid
            conn.send(result)

        def guarded(start):  # a call that fails to start still answers, and gives its slot back
            def run(slot: int) -> None:
                def done(result: dict) -> None:
                    self._release(slot)
                    reply(result)

                try:
                    start(slot, done)
                except Exception as exc:
                    done({"infra_error": f"fork server error: {type(exc).__name__}: {exc}"})

            return run

        op = req.get("op")
        try:
            if op == "run":
                self._with_slot(guarded(lambda slot, done: Run(self, req, slot, done)))
            elif op == "session_run":
                self._with_slot(guarded(lambda slot, done: self.session_run(req, done)))
            elif op == "session_open":
                self.session_open(req, reply, conn)
            elif op == "session_close":
                self.end_session(req.get("session", ""))
                reply({"closed": True})
            elif op == "info":
                reply(self.iso.describe())
            elif op == "ping":
                reply({"pong": True, "pid": os.getpid(), "supervisor": os.getppid()})
            elif op == "shutdown":
                self.loop.stopping = True
                reply({"stopping": True})
            else:
                reply({"error": f"unknown op {op!r}"})
        except Exception as exc:  # a bug here must not take the daemon down
            reply({"infra_error": f"fork server error: {type(exc).__name__}: {exc}"})

    # -- sessions
    def session_open(self, req: dict, reply, conn: Connection) -> None:
        if not self.session_uids:
            reply({"infra_error": "too many open sessions"})
            return
        uid_index = self.session_uids.pop()
        uid = self.uid_for(uid_index)
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        null = os.open("/dev/null", os.O_RDWR)
        scratch = self.make_scratch(uid)
        spec = {"op": "session_open", "limits": limits_for(req), "uid": uid, "scratch": scratch}

        def exited(status: int | None) -> None:  # the uid and scratch dir are free once the process is gone
            self.session_uids.append(uid_index)
            self.drop_scratch(scratch)

        try:
            pid = self.zygote.spawn(spec, [null, null, null, child_sock.fileno()], exited)
        except BaseException:
            parent_sock.close()
            exited(None)
            raise
        finally:
            child_sock.close()
            os.close(null)

        def settle(ok: bytes) -> None:
            self.loop.cancel(timer)
            self.loop.remove_reader(parent_sock.fileno())
            if ok != b"R":
                self.zygote.kill(pid)
                parent_sock.close()
                reply({"infra_error": "session setup failed"})
                return
            sid = f"s{pid}"
            self.sessions[sid] = {"pid": pid, "sock": parent_sock, "limits": limits_for(req)}
            if conn.closed:
                self.end_session(sid)
            else:
                conn.sessions.add(sid)
            reply({"session": sid})

        def on_status() -> None:
            try:
                settle(parent_sock.recv(16, socket.MSG_DONTWAIT))
            except BlockingIOError:
                return
            except OSError:
                settle(b"")

        timer = self.loop.call_later(10, lambda: settle(b""))
        self.loop.add_reader(parent_sock.fileno(), on_status)

    def session_run(self, req: dict, done) -> None:
        sid = req.get("session", "")
        sess = self.sessions.get(sid)
        if sess is None:
            done({"error": "unknown or closed session"})
        elif "running" in sess:
            done({"error": "the session is already running a call"})
        else:
            SessionRun(self, sid, sess, req, done)

    def end_session(self, sid: str) -> None:
        sess = self.sessions.pop(sid, None)
        if sess is None:
            return
        self.zygote.kill(sess["pid"])  # its uid and scratch dir are freed when the zygote reports it gone
        running = sess.get("running")
        if running is not None:
            running.finish(None)
        self.loop.remove_reader(sess["sock"].fileno())
        sess["sock"].close()

    # -- lifetime
    def _idle_watch(self) -> None:
        reap_all()  # a zygote that died, and orphans re-parented to us
        idle = time.monotonic() - self.last_activity
        if self.idle_exit_s > 0 and self.clients == 0 and idle > self.idle_exit_s:
            self.loop.stopping = True
        self.loop.call_later(1.0, self._idle_watch)

    def _stop(self, *_: object) -> None:
        self.loop.stopping = True

    def serve(self) -> None:
        """Run until told to stop (``shutdown``, SIGTERM/SIGINT, idle), then end every session and call."""
        wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        self.loop.add_reader(wake_r, lambda: os.read(wake_r, 512))
        self.loop.call_later(1.0, self._idle_watch)
        gc.freeze()  # what exists now is never garbage: keep the collector off those pages in every fork
        try:
            self.loop.run()
        finally:
            for sid in list(self.sessions):
                self.end_session(sid)
            self.zygote.stop()  # it kills every call still running


def serve_worker(server: Server, listener: socket.socket) -> None:
    """One pre-forked worker: accept clients on the shared listening socket until idle or told to stop."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    if os.geteuid() != 0:
        prctl(PR_SET_DUMPABLE, 0)  # calls share our uid here: keep them out of /proc/<pid>/mem and ptrace
    listener.setblocking(False)

    def accept() -> None:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError):  # another worker took it
            return
        sock.setblocking(False)
        Connection(server, sock.fileno(), sock.fileno(), owner=sock)

    server.loop.add_reader(listener.fileno(), accept)
    server.serve()
