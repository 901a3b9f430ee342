"""The zygote: a fresh interpreter per worker that forks every call process, reaps it and reports its exit.

Started by its worker (``worker.ZygoteHandle``) as ``python -I -S <runtime dir>/zygote/forkserver/__main__.pyc
--zygote FD STATE READY``: the package compiled once into the daemon's runtime dir, so the zygote compiles
nothing itself (the compiler's leftovers, ~4 MB of heap, would be copied by every call's fork). It holds
the warm modules user code commonly imports and a scrubbed environment, keeps ``READY`` call processes
forked ahead of their calls, and never blocks on its worker: replies wait in an outbox.

Messages on the worker <-> zygote socket (SOCK_SEQPACKET, one JSON object a packet):
  worker -> zygote  {"op", "language", "limits", "uid", "scratch"} + the call's fds  -> {"pid"} | {"error"}
                    {"kill": pid}: SIGKILL the call's process group, if that pid is still an unreaped call
  zygote -> worker  {"subreaper": bool} once at start, then {"exits": [[pid, wait status], ...]}
Where ``callsetup.c`` was built its loop runs instead of ``_serve_in_python``, and asks ``new_request``
about requests of no cached plan.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import gc
import json
import os
import select
import signal
import socket
import sys
from typing import Any, NoReturn

from . import abi
from .call import CallContext, ready_child
from .callsetup import CallSetup
from .isolation import Isolation
from .kernel import (
    CLONE_NEWPID,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    PR_SET_CHILD_SUBREAPER,
    PR_SET_DUMPABLE,
    fork_bare,
    killpg,
    libc,
    prctl,
    setns,
    sweep_orphans,
    unshare,
)
from .limits import CALL_WORKDIR, Plan

SCRUBBED_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONIOENCODING": "utf-8",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
WARM_MODULES = (
    "math",
    "re",
    "json",
    "itertools",
    "collections",
    "functools",
    "heapq",
    "bisect",
    "string",
    "random",
    "decimal",
    "fractions",
    "statistics",
    "typing",
    "dataclasses",
    "datetime",
    "copy",
    "operator",
    "array",
)

_FILLERS: list[object] = []  # the zygote's for good: see fill_pools


def main(argv: list[str]) -> NoReturn:
    """``--zygote FD STATE READY``: a worker's zygote on socket FD, with the daemon's isolation STATE, keeping
    READY call processes forked ahead. Exits, killing its calls, when the worker hangs up."""
    fd, state, ready_calls = int(argv[1]), argv[2], int(argv[3])
    iso = Isolation.restore(state)
    sys_path = _prepare_to_fork()
    sock = _own_fds(socket.socket(fileno=fd))
    try:  # without namespaces, what calls leave behind is re-parented to us and swept (_reap)
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        subreaper = True
    except OSError:  # gVisor refuses it here: orphans go to the worker, which sweeps them instead
        subreaper = False
    if not iso.root:
        prctl(PR_SET_DUMPABLE, 0)  # calls share our uid here: keep them out of /proc/<pid>/mem and ptrace
    wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC) if iso.namespaces else -1
    ctx = CallContext(iso, sys_path, _ready_mounts(iso))
    if iso.call_setup:
        ctx.call_setup = CallSetup(iso.call_setup, iso, ctx.ready_mounts, own_pidns)
    for name in [name for name in sys.modules if name == __package__ or name.startswith(f"{__package__}.")]:
        del sys.modules[name]  # user code imports none of ours (our functions keep their modules alive)
    gc.collect()
    _FILLERS[:] = fill_pools()
    gc.freeze()
    libc.malloc_trim(0)  # each page still mapped is copied by every fork and torn down at every exit
    if ctx.call_setup:
        sock.send(json.dumps({"subreaper": subreaper}).encode())
        ctx.call_setup.serve(ctx, wake_r, ready_calls, functools.partial(new_request, ctx))  # never returns
    _serve_in_python(sock, ctx, wake_r, own_pidns, ready_calls, subreaper)


def _own_fds(sock: socket.socket) -> socket.socket:
    """Keep only what is the zygote's: its worker's socket on fd 3, /dev/null on 0 and 1 (in stdio mode
    those are the protocol stream, which only the worker may hold), stderr (the daemon's log)."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    fd = sock.detach()
    if fd != abi.CTL_FD:
        os.dup2(fd, abi.CTL_FD, inheritable=False)
    null = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1):
        os.dup2(null, std)
    os.closerange(abi.CTL_FD + 1, 65536)  # the listening socket, the worker's loop and its clients are not ours
    return socket.socket(fileno=abi.CTL_FD)


def _prepare_to_fork() -> list[str]:
    """Do once, in the process that forks calls, what every call would otherwise repeat: import the modules
    user code commonly needs, scrub the environment the calls inherit (``os.environ.clear()`` unsets one
    variable at a time, ~150 us per call). Returns the calls' ``sys.path``: this interpreter's, less
    entries that do not exist (python311.zip) and the fork server's own code."""
    for name in WARM_MODULES:
        __import__(name)
    os.environ.clear()
    os.environ.update(SCRUBBED_ENV, HOME=CALL_WORKDIR, TMPDIR=CALL_WORKDIR)  # per call without namespaces
    own = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return [p for p in sys.path if p and os.path.isdir(p) and os.path.abspath(p) != own]


def fill_pools(dense_run: int = 8, bytes_per_class: int = 64 << 10) -> list[object]:
    """Objects that fill the free blocks left in the allocator's partly used pools (pymalloc's 16-byte size
    classes up to 512 bytes), class by class, until new ones come from consecutive addresses: a stretch of a
    pool nothing has used yet. A call process's own allocations then land there, on a few pages, instead of
    in the holes that ``gc.collect()`` and startup left all over the heap, where each page they write to is a
    fault and a copy (~24 faults of ~300 per call). What ends up in the free blocks (~1,800 objects, ~260 KB)
    is zero bytes, ints and bare objects. At most ``bytes_per_class`` a class (a debug allocator pads blocks,
    so addresses are never consecutive); nothing without pymalloc (no allocated blocks to count)."""
    fillers: list[object] = []
    if not sys.getallocatedblocks():
        return fillers
    for size in range(16, 513, 16):
        run, last = 0, 0
        for i in range(bytes_per_class // size):
            obj = object() if size == 16 else (1 << 20) + i if size == 32 else bytes(size - 33)  # 28 B int
            fillers.append(obj)
            run = run + 1 if id(obj) == last + size else 0
            if run == dense_run:
                break
            last = id(obj)
    return fillers


def _ready_mounts(iso: Isolation) -> list[tuple]:
    """Fresh /dev/shm and /proc in the skeleton root, mounted by every call process (with namespaces)."""
    if not iso.namespaces:
        return []
    skel, flags = iso.skeleton, ctypes.c_ulong(MS_NOSUID | MS_NODEV | MS_NOEXEC)
    return [
        (b"tmpfs", f"{skel}/dev/shm".encode(), b"tmpfs", flags, b"size=16m,mode=1777"),
        (b"proc", f"{skel}/proc".encode(), b"proc", flags, None),
    ]


def _serve_in_python(
    sock: socket.socket, ctx: CallContext, wake_r: int, own_pidns: int, ready_calls: int, subreaper: bool
) -> NoReturn:
    """The zygote's loop in Python, where ``callsetup.c`` was not built: fork a call process for each
    request, reap them, report exits.

    The worker does not fork calls itself: every fork write-protects the forking process's pages, and the
    worker's event loop then touches hundreds of them per call, each one a page fault and usually a copy.
    It never blocks on a send (the socket holds only 10 packets each way): replies wait in an outbox."""
    ctl_fd = abi.CTL_FD
    calls: set[int] = set()
    ready: collections.deque[tuple[int, socket.socket]] = collections.deque()
    outbox: collections.deque[bytes] = collections.deque()
    poller = select.poll()
    poller.register(ctl_fd, select.POLLIN)
    poller.register(wake_r, select.POLLIN)

    def flush() -> None:
        while outbox:
            try:
                sock.send(outbox[0], socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError:  # the worker is gone; the next recv says so
                outbox.clear()
            else:
                outbox.popleft()
        poller.modify(ctl_fd, select.POLLIN | (select.POLLOUT if outbox else 0))

    def post(reply: dict) -> None:
        outbox.append(json.dumps(reply).encode())
        flush()

    for _ in range(ready_calls):
        ready.append(fork_ready(ctx, own_pidns))
    post({"subreaper": subreaper})
    while True:
        events = dict(poller.poll())
        if wake_r in events:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 512)
        exits = _reap(ctx.iso, calls, ready)
        if exits:
            post({"exits": exits})
        elif events.get(ctl_fd, 0) & select.POLLOUT:
            flush()
        if not events.get(ctl_fd, 0) & (select.POLLIN | select.POLLHUP):
            continue
        try:
            msg, fds, _, _ = socket.recv_fds(sock, abi.PACKET, abi.MAX_FDS)
        except OSError:
            msg, fds = b"", []
        if not msg:  # the worker is gone: so are its calls
            for pid in calls:
                killpg(pid)
            os._exit(0)
        if msg not in ctx.plans:
            kind, value = new_request(ctx, msg)
            if kind != "plan":
                for fd in fds:
                    os.close(fd)
                if kind == "kill" and value in calls:
                    killpg(value)
                elif kind == "error":
                    post({"error": value})
                continue
        try:
            pid = _hand_off(ctx, msg, fds, ready, own_pidns)
            calls.add(pid)
            reply = {"pid": pid}
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            for fd in fds:
                os.close(fd)
        post(reply)
        while len(ready) < ready_calls:  # fork the next ones now, not when their calls come
            try:
                ready.append(fork_ready(ctx, own_pidns))
            except OSError:
                break


def _hand_off(ctx: CallContext, msg: bytes, fds: list[int], ready: collections.deque, own_pidns: int) -> int:
    """Hand the call to a process forked ahead (skipping any that died waiting; forking one if none
    waits); return its pid."""
    tries = len(ready) + 3
    for attempt in range(tries):
        pid, ctl = ready.popleft() if ready else fork_ready(ctx, own_pidns)
        try:
            socket.send_fds(ctl, [msg], fds)
            return pid
        except OSError:
            if attempt == tries - 1:
                raise
        finally:
            ctl.close()
    raise AssertionError("unreachable")


def new_request(ctx: CallContext, msg: bytes) -> tuple[str, Any]:
    """A request of no cached plan: ``("kill", pid)``, ``("plan", its plan)`` (cached when requests of its
    shape can share it), or ``("error", why)``."""
    try:
        req = json.loads(msg)
        if "kill" in req:
            return "kill", int(req["kill"])
        plan = ctx.plan(req)
    except Exception as exc:
        return "error", f"bad request: {type(exc).__name__}: {exc}"
    if req.get("scratch") is None:  # requests of one shape (op, limits, uid) share a plan
        _cache_plan(ctx, msg, plan)
    return "plan", plan


def _cache_plan(ctx: CallContext, msg: bytes, plan: Plan) -> None:
    if len(ctx.plans) >= abi.MAX_PLANS:
        ctx.plans.clear()
        ctx.plan_list.clear()
        if ctx.call_setup:
            ctx.call_setup.clear_plans()
    ctx.plans[msg] = plan
    ctx.plan_list.append(plan)
    if ctx.call_setup:
        ctx.call_setup.add_plan(len(ctx.plan_list) - 1, msg, plan)


def fork_ready(ctx: CallContext, own_pidns: int) -> tuple[int, socket.socket]:
    """Fork a call process ahead of its call (see ``call.ready_child``); return its pid and control socket."""
    iso = ctx.iso
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        if iso.namespaces:  # the call is pid 1 of a new pid namespace: when it exits, all it started dies
            unshare(CLONE_NEWPID)
        try:
            pid = fork_bare()
            if pid == 0:
                ready_child(ctx, theirs.fileno())  # never returns
        finally:
            if iso.namespaces:  # our own later children belong in our own pid namespace again
                setns(own_pidns, CLONE_NEWPID)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return pid, ours


def _reap(iso: Isolation, calls: set[int], ready: collections.deque) -> list[list[int]]:
    """Reap exited children; return ``[pid, wait status]`` of the calls among them. A call's process group
    is killed while the call is still a zombie, so that group id cannot have been reused yet. Without pid
    namespaces, orphans are swept after any exit, an orphan's too (what it started was just re-parented)."""
    exits = []
    orphans = 0
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            break
        if info is None:
            break
        pid = info.si_pid
        if pid in calls:
            killpg(pid)  # stragglers of this call die with it
        status = os.waitpid(pid, 0)[1]
        if pid in calls:
            calls.discard(pid)
            exits.append([pid, status])
        else:  # an orphan: whatever it started is re-parented to us now
            orphans += 1
    if (exits or orphans) and not iso.namespaces:
        sweep_orphans(calls | {pid for pid, _ in ready})
    return exits
