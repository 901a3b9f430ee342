"""A call process: forked by its zygote ahead of its call, set up, then the user's code (never returns).

Per call, with namespaces: pid 1 of a fresh pid namespace (when it exits the kernel kills everything it
started; see ``zygote.fork_ready``) -> own session and process group -> new mount, IPC and UTS namespaces
-> fresh /proc and /dev/shm in the read-only skeleton root -> chroot -> waits for its call -> a fresh tmpfs
scratch dir -> rlimits -> an unprivileged uid per slot -> no_new_privs + the seccomp filter -> scrubbed
environment -> the code. A run's first stderr bytes are ``READY_MARK`` (a session sends ``R`` on its
control socket): anything else the worker sees first is a setup failure, reported after ``INFRA_MARK``.

``ready_child`` takes these steps in Python; ``ready_child_c`` takes over a process that ``callsetup.c``
forked and set up as far as it could. Both run as few statements over as few objects as they can: every
page a forked process writes is copied.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import ctypes
import io
import json
import os
import resource
import signal
import socket
import sys
import traceback
import types
from typing import Any, NoReturn

from . import abi
from .kernel import CLONE_NEWIPC, CLONE_NEWNS, CLONE_NEWUTS, PR_SET_NO_NEW_PRIVS, check, libc, prctl, unshare
from .limits import CALL_WORKDIR, Plan
from .protocol import HEADER, INFRA_MARK, READY_MARK

_CTL_FD, _PACKET, _MAX_FDS = abi.CTL_FD, abi.PACKET, abi.MAX_FDS  # plain globals: fewer objects touched per call


class CallContext:
    """What every call process of a zygote starts from, made by the zygote before it forks any: the
    isolation, the cached plans, the mounts each call process makes, the calls' ``sys.path``, their std
    streams and premade ``__main__``, and ``callsetup.c`` where it runs. Call processes only read it."""

    __slots__ = ("call_setup", "iso", "main_ahead", "plan_list", "plans", "ready_mounts", "streams", "sys_path")

    def __init__(self, iso: Any, sys_path: list[str], ready_mounts: list[tuple]) -> None:
        self.iso = iso
        self.sys_path = sys_path  # the interpreter's sys.path minus entries that do not exist (python311.zip)
        self.ready_mounts = ready_mounts  # /dev/shm and /proc in the skeleton, mounted by every call process
        self.plans: dict[bytes, Plan] = {}  # request bytes -> plan, for requests of one shape (op, limits, uid)
        self.plan_list: list[Plan] = []  # the same plans in insertion order: callsetup.c knows them by index
        self.streams = std_streams()  # never used in the zygote: a run's call process only assigns them
        self.main_ahead = new_main(CALL_WORKDIR)  # for calls in CALL_WORKDIR; each call process owns its copy
        self.call_setup: Any = None  # callsetup.CallSetup, where the zygote loaded callsetup.c

    def plan(self, req: dict) -> Plan:
        return Plan(req, self.iso.namespaces, self.sys_path)


def ready_child(ctx: CallContext, ctl: int) -> NoReturn:
    """A call process forked ahead of its call, set up in Python (never returns; ``callsetup.c`` does the
    same steps faster where a C compiler was found). It sets up what no call changes (``_prepare_call``),
    waits on ``ctl`` for its call (``_receive_call``), applies the call's limits (``_limit_call``) and runs
    it (``_run_call``)."""
    code = 120
    failed = None
    try:
        try:
            _prepare_call(ctx, ctl)
        except Exception:  # reported on the call's stderr, where the worker looks for it
            failed = traceback.format_exc()
        msg = _receive_call()
        if not msg:  # the zygote is gone, and no call came
            os._exit(0)
        if failed:
            raise RuntimeError(failed)
        plan = ctx.plans.get(msg) or ctx.plan(json.loads(msg))
        code = _run_call(ctx, plan, _limit_call(ctx, plan))
    except BaseException:
        _report_setup_failure()
    finally:
        os._exit(code)


def ready_child_c(ctx: CallContext) -> NoReturn:
    """A call process that ``callsetup.c`` forked and set up as far as it could (never returns): for a
    request of a known plan everything up to the code, else up to the request (Python does the rest)."""
    code = 120
    try:
        signal.set_wakeup_fd(-1)  # the zygote's SIGCHLD wake-up pipe is not ours (C reset the handler)
        stage, error, msg_len, index, source_at, source_len = ctx.call_setup.read_result()
        if not msg_len:  # the zygote is gone, and no call came
            os._exit(0)
        if stage:
            raise RuntimeError(f"call setup failed: {abi.STAGES[stage]}: {os.strerror(error)}")
        if index < 0:  # a request of no cached plan
            plan = ctx.plan(json.loads(ctypes.string_at(ctx.call_setup.msg, msg_len)))
            source = _limit_call(ctx, plan)
        else:
            plan = ctx.plan_list[index]
            source = "" if plan.session else ctypes.string_at(source_at, source_len).decode("utf-8", "replace")
        code = _run_call(ctx, plan, source)
    except BaseException:
        _report_setup_failure()
    finally:
        os._exit(code)


def _report_setup_failure() -> None:
    with contextlib.suppress(OSError):
        os.write(2, INFRA_MARK + traceback.format_exc().encode(errors="replace"))


def _prepare_call(ctx: CallContext, ctl: int) -> None:
    """What no call changes: own session, ``ctl`` on fd 3 and no other fd of the zygote, and with
    namespaces (we are pid 1 of a fresh pid namespace, see ``zygote.fork_ready``) new mount, IPC and UTS
    namespaces with fresh /proc and /dev/shm in the skeleton root, and chroot into it."""
    signal.set_wakeup_fd(-1)  # the zygote's SIGCHLD wake-up pipe and handler are not ours
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    os.dup2(ctl, _CTL_FD, inheritable=False)
    os.closerange(4, 65536)  # nothing of the zygote (its socket, other calls' fds) stays reachable
    iso = ctx.iso
    if iso.namespaces:
        unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS)
        for args in ctx.ready_mounts:
            check(libc.mount(*args), "mount")
        os.chroot(iso.skeleton)


def _receive_call() -> bytes:
    """Wait on fd 3 for the call: the request the worker sent (a key of ``ctx.plans``, or JSON) with stdin,
    stdout, stderr (and a session's control socket), which become fds 0-2 (3). Empty: the zygote hung up."""
    msg, fds, _, _ = socket.recv_fds(socket.socket(fileno=_CTL_FD), _PACKET, _MAX_FDS)
    for target, fd in enumerate(fds):  # fds arrive ascending from 4 up: no dup2 clobbers a later one
        os.dup2(fd, target, inheritable=target < 3)  # 0-2 the std streams, 3 a session's control socket
    os.closerange(len(fds), 65536)
    return msg


def _limit_call(ctx: CallContext, plan: Plan) -> str:
    """The call's own setup: scratch dir, rlimits, uid, seccomp; a run's code read from stdin. Done, a
    run writes ``READY_MARK`` to stderr and a session sends ``R`` on its control socket: anything else
    the worker sees first is a setup failure."""
    if plan.scratch_mount:
        check(libc.mount(*plan.scratch_mount), "mount")
    os.chdir(plan.workdir)
    for which, limit in plan.rlimits:
        resource.setrlimit(which, limit)
    if plan.uid:
        os.setgroups([])
        os.setgid(plan.uid)
        os.setuid(plan.uid)
    seccomp = ctx.iso.seccomp
    if seccomp is not None:
        seccomp.install()
    else:
        prctl(PR_SET_NO_NEW_PRIVS, 1)
    source = "" if plan.session else _read_source()
    os.write(3 if plan.session else 2, b"R" if plan.session else READY_MARK)  # from here on, failures are the code's
    return source


def _run_call(ctx: CallContext, plan: Plan, source: str) -> int:
    """Run the call's code; return its exit status (bash and C++ replace this process)."""
    if plan.env:
        os.environ.update(plan.env)
    if "random" in sys.modules:  # kernel.fork_bare skipped the at-fork hook giving each child its own seed
        sys.modules["random"].seed()
    if plan.session:
        _redirect_std()
        return _session_loop(_fresh_main(ctx, plan))
    if plan.language != "python":
        _exec_program(plan.language, source)
    sys.stdin, sys.stdout, sys.stderr = ctx.streams
    code = _exec_python(source, _fresh_main(ctx, plan))
    try:  # noqa: SIM105
        atexit._run_exitfuncs()
    except BaseException:
        pass
    _flush_std()
    return code


def _read_source() -> str:
    """The code, sent ahead of the call's stdin as one frame (length + UTF-8 bytes)."""

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = os.read(0, n - len(data))
            if not chunk:
                raise EOFError("stdin closed before the code arrived")
            data += chunk
        return data

    (length,) = HEADER.unpack(exactly(HEADER.size))
    return exactly(length).decode("utf-8", "replace")  # lone surrogates (sent as surrogatepass) -> U+FFFD


def std_streams() -> tuple[io.TextIOWrapper, io.TextIOWrapper, io.TextIOWrapper]:
    return (
        io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8", errors="replace"),
        io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace"),
        io.TextIOWrapper(
            io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True
        ),
    )


def _redirect_std() -> None:
    sys.stdin, sys.stdout, sys.stderr = std_streams()


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 (contextlib.suppress is three Python calls more in every call process)
            stream.flush()
        except Exception:
            pass


def _exec_python(code: str, namespace: dict) -> int:
    """Run ``code`` like ``python main.py`` would; return its exit status."""
    try:
        compiled = compile(code, "main.py", "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        traceback.print_exception(type(exc), exc, None)
        return 1
    try:
        exec(compiled, namespace)
        return 0
    except SystemExit as exc:
        code_ = exc.code
        if code_ is None:
            return 0
        if isinstance(code_, int):
            return code_ & 0xFF
        print(code_, file=sys.stderr)
        return 1
    except BaseException as exc:
        traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next if exc.__traceback__ else None)
        return 1
    finally:
        _flush_std()


def new_main(workdir: str) -> types.ModuleType:
    module = types.ModuleType("__main__")
    module.__dict__.update(__file__=os.path.join(workdir, "main.py"), __builtins__=builtins)
    return module


def _fresh_main(ctx: CallContext, plan: Plan) -> dict:
    """Make the call's ``__main__``, ``sys.argv`` and ``sys.path`` (each call process has its own copies)."""
    module = ctx.main_ahead if plan.workdir == CALL_WORKDIR else new_main(plan.workdir)
    sys.modules["__main__"] = module
    sys.argv = ["main.py"]
    sys.path = plan.sys_path
    return module.__dict__


def _exec_program(language: str, code: str) -> None:
    """Replace this process with bash or a compiled C++ program (never returns)."""
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    if language == "bash":
        with open("main.sh", "w", encoding="utf-8") as fh:
            fh.write(code)
        os.execve("/bin/bash", ["bash", "--noprofile", "--norc", "main.sh"], dict(os.environ))
    with open("main.cpp", "w", encoding="utf-8") as fh:
        fh.write(code)
    script = "g++ -std=c++17 -O2 -pipe -o main main.cpp 1>&2 || exit 125; exec ./main"
    os.execve("/bin/bash", ["bash", "--noprofile", "--norc", "-c", script], dict(os.environ))


def _session_loop(namespace: dict) -> int:
    """Serve ``session_run`` requests: new std streams arrive with each request over the control socket."""
    ctl = socket.socket(fileno=_CTL_FD)
    devnull = os.open("/dev/null", os.O_RDWR)
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(ctl, 1 << 20, 3)
        except OSError:
            return 0
        if not msg:
            return 0
        request = json.loads(msg)
        for target, fd in zip((0, 1, 2), fds, strict=False):
            os.dup2(fd, target)
            os.close(fd)
        _redirect_std()
        code = request.get("code", "")
        status = _exec_python(code.encode("utf-8", "surrogatepass").decode("utf-8", "replace"), namespace)
        for target in (0, 1, 2):
            os.dup2(devnull, target)
        ctl.sendall(json.dumps({"exit_code": status}).encode())
