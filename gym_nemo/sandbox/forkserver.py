"""The gym_nemo fork server: runs untrusted code in isolated children of a warm interpreter.

Standalone on purpose (standard library only, Python >= 3.11): the local backend starts it as a daemon on
a unix socket shared by every env process on the machine, and the docker backend runs the same file inside
each container over one persistent stdio stream.

Protocol: frames of a 4-byte big-endian length + a UTF-8 JSON object, both ways. Requests carry ``id`` and
``op``: ``run`` | ``session_open`` | ``session_run`` | ``session_close`` | ``info`` | ``ping`` | ``shutdown``.

Processes: the daemon pre-forks one worker per core (an event loop over the client sockets); each worker
starts a zygote, a fresh interpreter (this file, compiled once into the runtime dir) holding the warm
modules, which forks every call process and reaps it; the worker never forks calls itself (see
``_zygote_serve`` on why). The zygote keeps ``--ready`` call processes forked ahead of their calls.
Where a C compiler is found, ``callsetup.c`` (next to this file; built once per version) runs the zygote's
loop and each call process's setup up to the user's code, because a forked interpreter copies every page
its Python touches; without one the same steps run in Python (``--call-setup python`` forces that), and
``info`` says which.

Per call, with root on the host ("namespaces" mode): a process forked ahead as pid 1 of a fresh pid
namespace (when it exits the kernel kills everything it started) -> own session/process group -> new
mount, IPC and UTS namespaces -> fresh /proc and /dev/shm in a read-only skeleton root (/usr, /etc and the
interpreter's prefix bound read-only; nothing of /root, /home, /work, /tmp of the host) -> chroot -> waits
for its call -> a fresh tmpfs scratch dir -> rlimits -> an unprivileged uid per slot -> no_new_privs + a
seccomp filter -> scrubbed environment -> the code.
The daemon itself lives in an empty network namespace (loopback down); the zygote is a child subreaper,
the worker enforces the wall timeout by having the zygote kill the call's process group, and caps output.
Without root it falls back to rlimits, process groups, the subreaper sweep, seccomp and a per-call
scratch dir, and ``info`` says so.
"""

from __future__ import annotations

import atexit
import builtins
import collections
import contextlib
import ctypes
import errno
import functools
import gc
import heapq
import io
import json
import os
import platform
import resource
import select
import selectors
import shutil
import signal
import socket
import stat
import struct
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Callable
from typing import Any

PROTOCOL = 1
_HEADER = struct.Struct(">I")
MAX_FRAME = 256 * 1024 * 1024

# ----------------------------------------------------------------------------- framing (shared with clients)


def encode_frame(obj: dict) -> bytes:
    data = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    return _HEADER.pack(len(data)) + data


def decode_body(data: bytes) -> dict:
    return json.loads(data.decode("utf-8", "surrogatepass"))


def read_frame_blocking(sock_or_file) -> dict | None:
    """Read one frame from a socket (``recv``) or binary file (``read``); ``None`` at EOF."""
    recv = sock_or_file.recv if hasattr(sock_or_file, "recv") else sock_or_file.read

    def exactly(n: int) -> bytes | None:
        chunks, got = [], 0
        while got < n:
            chunk = recv(n - got)
            if not chunk:
                return None
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    header = exactly(_HEADER.size)
    if header is None:
        return None
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes exceeds the limit")
    body = exactly(length)
    if body is None:
        return None
    return decode_body(body)


# ----------------------------------------------------------------------------- kernel interfaces

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
# The same library called with the GIL held, for fork(): see ``fork_bare``.
_libc_gil = ctypes.PyDLL("libc.so.6", use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NS_FLAGS = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18

PR_SET_CHILD_SUBREAPER = 36
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(
        _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
        f"mount {target}",
    )


def fork_bare() -> int:
    """fork(2) without CPython's at-fork machinery, for a single-threaded forking process.

    ``os.fork`` runs every ``os.register_at_fork`` hook in the child: once ``threading`` is imported (any
    warm module that imports ``subprocess`` does) its hook alone roughly doubles the cost of a fork here,
    because it touches objects all over the heap and so copies their pages. With one thread and the GIL
    held through the call, the child's interpreter state is exactly the parent's and needs no repair;
    the one hook that matters, ``random``'s reseed, is redone in the child by ``_ready_child``."""
    pid = _libc_gil.fork()
    if pid < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fork: {os.strerror(err)}")
    return pid


def prctl(option: int, arg: int = 0) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), f"prctl({option})")


# ----------------------------------------------------------------------------- seccomp

# Syscalls denied with EPERM: debugging other processes, mounting, namespaces, kernel keyring, BPF,
# perf, modules, kexec, clock/reboot/swap, io_uring (bypasses the filter), userfaultfd, handle opens.
_DENY_X86_64 = {
    "ptrace": 101,
    "syslog": 103,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "sethostname": 170,
    "setdomainname": 171,
    "iopl": 172,
    "ioperm": 173,
    "init_module": 175,
    "delete_module": 176,
    "quotactl": 179,
    "pivot_root": 155,
    "chroot": 161,
    "clock_settime": 227,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
}
_X86_64 = {"arch": 0xC000003E, "socket": 41, "clone": 56, "clone3": 435, "deny": _DENY_X86_64}
_ALLOWED_SOCKET_FAMILIES = (socket.AF_UNIX,)  # no AF_INET/AF_INET6/AF_NETLINK/AF_PACKET


def _assemble(items: list) -> bytes:
    """Classic BPF from ``(code, jt, jf, k)`` tuples whose jump targets are label names (or 0 for the next
    instruction) and ``("label", name)`` markers."""
    where: dict[str, int] = {}
    program: list[tuple] = []
    for item in items:
        if item[0] == "label":
            where[item[1]] = len(program)
        else:
            program.append(item)

    def offset(target: str | int, at: int) -> int:
        return 0 if target == 0 else where[target] - at - 1

    return b"".join(
        struct.pack("HBBI", code, offset(jt, i), offset(jf, i), k) for i, (code, jt, jf, k) in enumerate(program)
    )


def _seccomp_program() -> bytes | None:
    """A classic-BPF seccomp filter for this architecture, or None where no table is known.

    The denied syscall numbers are laid out as a binary search tree, so an allowed syscall passes ~15
    instructions instead of one compare per denied syscall. The kernel runs the filter once for every
    syscall number when it is attached (to build its allow cache), so the tree also makes attaching,
    which every call process does, ~3x cheaper (~35 us instead of ~110 us here)."""
    if platform.machine() != "x86_64":
        return None
    table = _X86_64
    ld_abs, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, kill = 0x7FFF0000, 0x80000000
    items: list = [
        (ld_abs, 0, 0, 4),  # seccomp_data.arch
        (jeq, "native", 0, table["arch"]),
        (ret, 0, 0, kill),
        ("label", "native"),
        (ld_abs, 0, 0, 0),  # seccomp_data.nr
        (jge, "kill", 0, 0x40000000),  # x32 ABI syscalls
        (jeq, "enosys", 0, table["clone3"]),  # libc falls back to clone(), whose flags we can inspect
        (jeq, "clone", 0, table["clone"]),
        (jeq, "socket", 0, table["socket"]),
    ]
    labels = iter(range(1 << 30))

    def search(numbers: list[int]) -> None:
        if len(numbers) <= 3:
            items.extend((jeq, "deny", 0, nr) for nr in numbers)
            items.append((ret, 0, 0, allow))
            return
        mid, upper = len(numbers) // 2, f"ge{next(labels)}"
        items.append((jge, upper, 0, numbers[mid]))
        search(numbers[:mid])
        items.append(("label", upper))
        search(numbers[mid:])

    search(sorted(table["deny"].values()))
    families = _ALLOWED_SOCKET_FAMILIES
    items += [
        ("label", "clone"),
        (ld_abs, 0, 0, 16),  # args[0] (low word): clone flags
        (jset, "deny", 0, NS_FLAGS),
        (ret, 0, 0, allow),
        ("label", "socket"),
        (ld_abs, 0, 0, 16),  # args[0]: address family
        *((jeq, "allow", 0, family) for family in families),
        (ret, 0, 0, 0x00050000 | errno.EACCES),
        ("label", "allow"),
        (ret, 0, 0, allow),
        ("label", "deny"),
        (ret, 0, 0, 0x00050000 | errno.EPERM),
        ("label", "enosys"),
        (ret, 0, 0, 0x00050000 | errno.ENOSYS),
        ("label", "kill"),
        (ret, 0, 0, kill),
    ]
    return _assemble(items)


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


class SeccompFilter:
    """A seccomp program ready to install: built once in the parent, so the child only calls prctl."""

    def __init__(self, program: bytes) -> None:
        self._buffer = ctypes.create_string_buffer(program)
        self.fprog = _SockFprog(len(program) // 8, ctypes.addressof(self._buffer))
        self._args = (PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(self.fprog), 0, 0)

    def install(self) -> None:
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        _check(_libc.prctl(*self._args), "prctl(PR_SET_SECCOMP)")


# ----------------------------------------------------------------------------- configuration

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
DEFAULT_LIMITS = {
    "timeout_s": 10.0,
    "memory_mb": 1024,
    "max_output_bytes": 1 << 20,
    "max_file_mb": 16,
    "max_open_files": 64,
    "max_processes": 64,
    "scratch_mb": 64,
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


class Isolation:
    """What this daemon can enforce, decided once at start-up and reported by ``info``."""

    def __init__(self, want_namespaces: bool, base_uid: int, slots: int, runtime_dir: str) -> None:
        self.root = os.geteuid() == 0
        self.runtime_dir = runtime_dir
        self.base_uid = base_uid
        self.slots = slots
        self.namespaces = False
        self.network_namespace = False
        self.skeleton: str | None = None
        self.notes: list[str] = []
        program = _seccomp_program()
        self.seccomp = SeccompFilter(program) if program is not None else None
        if self.seccomp is None:
            self.notes.append(f"no seccomp table for {platform.machine()}")
        if want_namespaces and self.root:
            try:
                self._enter_private_namespaces()
            except OSError as exc:
                self.notes.append(f"namespaces unavailable ({exc}); falling back to process isolation")
        elif want_namespaces:
            self.notes.append("not root: no namespaces, chroot or uid switch; process isolation only")
        self.call_setup: str | None = None  # callsetup.c compiled (see use_call_setup)
        self.scratch_base = None
        if not self.namespaces:
            # Outside the private runtime dir, so slot uids can reach their own dir (0711: not list others).
            self.scratch_base = tempfile.mkdtemp(prefix="gym_nemo_scratch_")
            os.chmod(self.scratch_base, 0o711)

    _STATE = ("root", "runtime_dir", "base_uid", "slots", "namespaces", "network_namespace", "skeleton")
    _STATE += ("notes", "scratch_base", "call_setup")

    def state(self) -> str:
        """What a zygote needs to know of this isolation; it runs inside the namespaces set up here."""
        return json.dumps({name: getattr(self, name) for name in self._STATE})

    @classmethod
    def restore(cls, state: str) -> Isolation:
        iso = cls.__new__(cls)
        iso.__dict__.update(json.loads(state))
        program = _seccomp_program()
        iso.seccomp = SeccompFilter(program) if program is not None else None
        return iso

    def _enter_private_namespaces(self) -> None:
        """Give the daemon an empty network namespace and a private mount namespace holding the skeleton."""
        unshare(CLONE_NEWNET)
        self.network_namespace = True
        skeleton = tempfile.mkdtemp(prefix="root_", dir=self.runtime_dir)
        unshare(CLONE_NEWNS)
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        mount("tmpfs", skeleton, "tmpfs", MS_NOSUID, "mode=755,size=1m")
        for name in ("usr", "etc"):
            self._bind_ro(f"/{name}", f"{skeleton}/{name}")
        for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            path = f"/{name}"
            if os.path.islink(path):
                os.symlink(os.readlink(path), f"{skeleton}/{name}")
            elif os.path.isdir(path):
                self._bind_ro(path, f"{skeleton}/{name}")
        prefix = os.path.realpath(sys.base_prefix)  # the interpreter's stdlib, wherever it lives
        if prefix != "/usr" and not prefix.startswith("/usr/"):
            self._bind_ro(prefix, f"{skeleton}{prefix}")
        os.makedirs(f"{skeleton}/dev", mode=0o755)
        for node, (major, minor) in {
            "null": (1, 3),
            "zero": (1, 5),
            "full": (1, 7),
            "random": (1, 8),
            "urandom": (1, 9),
        }.items():
            os.mknod(f"{skeleton}/dev/{node}", 0o666 | stat.S_IFCHR, os.makedev(major, minor))
            os.chmod(f"{skeleton}/dev/{node}", 0o666)
        for link, target in (
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ):
            os.symlink(target, f"{skeleton}/dev/{link}")
        for name in ("proc", "tmp", "dev/shm"):
            os.makedirs(f"{skeleton}/{name}", mode=0o755, exist_ok=True)
        mount(None, skeleton, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
        self.skeleton = skeleton
        self.namespaces = True

    def use_call_setup(self, how: str, cache_dir: str | None, library: str | None = None) -> None:
        """Set up calls in C where ``callsetup.c`` compiles or ``library`` (its build) loads; else in Python."""
        if how == "python":
            self.notes.append("call setup in Python (--call-setup python)")
            return
        why = None
        if not library:
            library, why = build_call_setup(cache_dir or self.runtime_dir, self.runtime_dir)
        if library:
            try:
                ctypes.CDLL(library)
            except OSError as exc:
                library, why = None, f"callsetup library does not load ({exc}): call setup in Python"
        self.call_setup = library
        if why:
            self.notes.append(why)

    @staticmethod
    def _bind_ro(source: str, target: str) -> None:
        os.makedirs(target, mode=0o755, exist_ok=True)
        mount(source, target, None, MS_BIND | MS_REC)
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)

    def enforced(self) -> dict[str, bool]:
        seccomp = self.seccomp is not None
        return {
            "wall_timeout": True,
            "cpu_time": True,
            "memory": True,
            "file_size": True,
            "open_files": True,
            "processes": not self.root or self.base_uid > 0,  # RLIMIT_NPROC binds any uid but 0
            "output_cap": True,
            "scrubbed_env": True,
            "scratch_dir": True,
            "kill_process_group": True,
            "child_subreaper": True,
            "pid_namespace": self.namespaces,
            "unprivileged_uid": not self.root or self.base_uid > 0,
            "no_network": self.network_namespace or seccomp,
            "filesystem_isolation": self.namespaces,
            "seccomp": seccomp,
        }

    def describe(self) -> dict:
        return {
            "mode": "namespaces" if self.namespaces else "process",
            "enforced": self.enforced(),
            "notes": self.notes,
            "python": sys.version.split()[0],
            "machine": platform.machine(),
            "slots": self.slots,
            "call_setup": "c" if self.call_setup else "python",
            "protocol": PROTOCOL,
        }

    def cleanup(self) -> None:
        if self.scratch_base:
            shutil.rmtree(self.scratch_base, ignore_errors=True)
        if self.skeleton:
            _libc.umount2(self.skeleton.encode(), 2)  # MNT_DETACH
            with contextlib.suppress(OSError):
                os.rmdir(self.skeleton)


# ----------------------------------------------------------------------------- the child side

INFRA_MARK = b"\x00gym_nemo_setup_failed\x00"
READY_MARK = b"\x00gym_nemo_ready\x00"  # a run's first stderr bytes: setup done, what follows is the code's
CALL_WORKDIR = "/tmp"  # the scratch dir as calls see it inside the skeleton root


def _limits_for(req: dict) -> dict:
    limits = dict(DEFAULT_LIMITS)
    limits.update({k: v for k, v in (req.get("limits") or {}).items() if k in DEFAULT_LIMITS and v is not None})
    return limits


class _Plan:
    """Everything a call process does between fork and the code, worked out in the zygote before it forks.

    Every page a forked child writes is copied, and running Python writes to every object it touches, so
    the child runs as few statements over as few objects as it can: plain tuples made just before the
    fork, one syscall a line (this halved the child's cost compared with building them in the child)."""

    __slots__ = ("c", "env", "language", "rlimits", "scratch_mount", "session", "sys_path", "uid", "workdir")

    def __init__(self, iso: Isolation, req: dict) -> None:
        limits = _limits_for(req)
        self.session = req.get("op") == "session_open"
        self.language = req.get("language", "python")
        self.uid: int | None = req.get("uid")
        cpu_s = int(float(limits["timeout_s"]) * (50 if self.session else 1)) + 1
        memory, file_size = int(limits["memory_mb"]) << 20, int(limits["max_file_mb"]) << 20
        self.rlimits = (
            (resource.RLIMIT_CPU, (cpu_s, cpu_s + 1)),
            (resource.RLIMIT_AS, (memory, memory)),
            (resource.RLIMIT_FSIZE, (file_size, file_size)),
            (resource.RLIMIT_NOFILE, (int(limits["max_open_files"]),) * 2),
            (resource.RLIMIT_NPROC, (int(limits["max_processes"]),) * 2),
            (resource.RLIMIT_CORE, (0, 0)),
        )
        self.scratch_mount: tuple | None = None
        if iso.namespaces:  # mounted by the call process inside its root, once it knows the call's uid
            uid = self.uid
            options = f"size={int(limits['scratch_mb'])}m,mode=700" + (f",uid={uid},gid={uid}" if uid else "")
            flags = ctypes.c_ulong(MS_NOSUID | MS_NODEV)
            self.scratch_mount = (b"tmpfs", CALL_WORKDIR.encode(), b"tmpfs", flags, options.encode())
            self.workdir = CALL_WORKDIR
        else:
            self.workdir = req["scratch"]
        self.env = None if self.workdir == CALL_WORKDIR else {"HOME": self.workdir, "TMPDIR": self.workdir}
        self.sys_path = [self.workdir, *_CALL_SYS_PATH]


def _ready_child(iso: Isolation, ctl: int) -> None:
    """A call process forked ahead of its call, set up in Python (never returns; ``callsetup.c`` does the
    same steps faster where a C compiler was found). It sets up what no call changes (``_prepare_call``),
    waits on ``ctl`` for its call (``_receive_call``), applies the call's limits (``_limit_call``) and runs
    it (``_run_call``)."""
    code = 120
    failed = None
    try:
        try:
            _prepare_call(iso, ctl)
        except Exception:  # reported on the call's stderr, where the worker looks for it
            failed = traceback.format_exc()
        msg = _receive_call()
        if not msg:  # the zygote is gone, and no call came
            os._exit(0)
        if failed:
            raise RuntimeError(failed)
        plan = _PLANS.get(msg) or _Plan(iso, json.loads(msg))
        code = _run_call(plan, _limit_call(iso, plan))
    except BaseException:
        _report_setup_failure()
    finally:
        os._exit(code)


def _ready_child_c(iso: Isolation) -> None:
    """A call process that ``callsetup.c`` forked and set up as far as it could (never returns): for a
    request of a known plan everything up to the code, else up to the request (Python does the rest)."""
    code = 120
    try:
        signal.set_wakeup_fd(-1)  # the zygote's SIGCHLD wake-up pipe is not ours (C reset the handler)
        stage, error, msg_len, index, source_at, source_len = _CALL_SETUP.read_result()
        if not msg_len:  # the zygote is gone, and no call came
            os._exit(0)
        if stage:
            raise RuntimeError(f"call setup failed: {_C_SETUP_STAGES[stage]}: {os.strerror(error)}")
        if index < 0:  # a request of no cached plan
            plan = _Plan(iso, json.loads(ctypes.string_at(_CALL_SETUP.msg, msg_len)))
            source = _limit_call(iso, plan)
        else:
            plan = _PLAN_LIST[index]
            source = "" if plan.session else ctypes.string_at(source_at, source_len).decode("utf-8", "replace")
        code = _run_call(plan, source)
    except BaseException:
        _report_setup_failure()
    finally:
        os._exit(code)


def _report_setup_failure() -> None:
    with contextlib.suppress(OSError):
        os.write(2, INFRA_MARK + traceback.format_exc().encode(errors="replace"))


def _prepare_call(iso: Isolation, ctl: int) -> None:
    """What no call changes: own session, ``ctl`` on fd 3 and no other fd of the zygote, and with
    namespaces (we are pid 1 of a fresh pid namespace, see ``_fork_ready``) new mount, IPC and UTS
    namespaces with fresh /proc and /dev/shm in the skeleton root, and chroot into it."""
    signal.set_wakeup_fd(-1)  # the zygote's SIGCHLD wake-up pipe and handler are not ours
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    os.dup2(ctl, 3, inheritable=False)
    os.closerange(4, 65536)  # nothing of the zygote (its socket, other calls' fds) stays reachable
    if iso.namespaces:
        unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS)
        for args in _READY_MOUNTS:
            _check(_libc.mount(*args), "mount")
        os.chroot(iso.skeleton)


def _receive_call() -> bytes:
    """Wait on fd 3 for the call: the request the worker sent (a key of ``_PLANS``, or JSON) with stdin,
    stdout, stderr (and a session's control socket), which become fds 0-2 (3). Empty: the zygote hung up."""
    msg, fds, _, _ = socket.recv_fds(socket.socket(fileno=3), ZYGOTE_PACKET, 8)
    for target, fd in enumerate(fds):  # fds arrive ascending from 4 up: no dup2 clobbers a later one
        os.dup2(fd, target, inheritable=target < 3)  # 0-2 the std streams, 3 a session's control socket
    os.closerange(len(fds), 65536)
    return msg


def _limit_call(iso: Isolation, plan: _Plan) -> str:
    """The call's own setup: scratch dir, rlimits, uid, seccomp; a run's code read from stdin. Done, a
    run writes ``READY_MARK`` to stderr and a session sends ``R`` on its control socket: anything else
    the worker sees first is a setup failure."""
    if plan.scratch_mount:
        _check(_libc.mount(*plan.scratch_mount), "mount")
    os.chdir(plan.workdir)
    for which, limit in plan.rlimits:
        resource.setrlimit(which, limit)
    if plan.uid:
        os.setgroups([])
        os.setgid(plan.uid)
        os.setuid(plan.uid)
    if iso.seccomp is not None:
        iso.seccomp.install()
    else:
        prctl(PR_SET_NO_NEW_PRIVS, 1)
    source = "" if plan.session else _read_source()
    os.write(3 if plan.session else 2, b"R" if plan.session else READY_MARK)  # from here on, failures are the code's
    return source


def _run_call(plan: _Plan, source: str) -> int:
    """Run the call's code; return its exit status (bash and C++ replace this process)."""
    if plan.env:
        os.environ.update(plan.env)
    if "random" in sys.modules:  # fork_bare skipped the at-fork hook that gives each child its own seed
        sys.modules["random"].seed()
    if plan.session:
        _redirect_std()
        return _session_loop(_fresh_main(plan))
    if plan.language != "python":
        _exec_program(plan.language, source)
    sys.stdin, sys.stdout, sys.stderr = _CALL_STREAMS
    code = _exec_python(source, _fresh_main(plan))
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

    (length,) = _HEADER.unpack(exactly(_HEADER.size))
    return exactly(length).decode("utf-8", "replace")  # lone surrogates (sent as surrogatepass) -> U+FFFD


def _std_streams() -> tuple[io.TextIOWrapper, io.TextIOWrapper, io.TextIOWrapper]:
    return (
        io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8", errors="replace"),
        io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace"),
        io.TextIOWrapper(
            io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True
        ),
    )


_CALL_STREAMS = ()  # made once in the zygote (never used there): a run's child only assigns them


def _redirect_std() -> None:
    sys.stdin, sys.stdout, sys.stderr = _std_streams()


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


def _new_main(workdir: str) -> types.ModuleType:
    module = types.ModuleType("__main__")
    module.__dict__.update(__file__=os.path.join(workdir, "main.py"), __builtins__=builtins)
    return module


_MAIN_AHEAD: types.ModuleType | None = None  # made by the zygote for calls in CALL_WORKDIR; each owns its copy


def _fresh_main(plan: _Plan) -> dict:
    """Make the call's ``__main__``, ``sys.argv`` and ``sys.path`` (each call process has its own copies)."""
    module = _MAIN_AHEAD if _MAIN_AHEAD and plan.workdir == CALL_WORKDIR else _new_main(plan.workdir)
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
    ctl = socket.socket(fileno=3)
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


# ----------------------------------------------------------------------------- the call setup in C

# ``callsetup.c`` does in C what ``_ready_child`` (fork, prepare, receive the call, apply its plan, read its
# code) and ``_zygote_serve``'s loop do in Python. A forked Python process copies every page it writes, and
# each Python statement writes to the objects it touches: those steps cost ~300 page faults per call in
# Python. Compiled once per source version with the host's C compiler where there is one; else Python.
CALL_SETUP_C = os.path.join(os.path.dirname(os.path.abspath(__file__)), "callsetup.c")
_C_SETUP_STAGES = {
    3: "unshare",
    4: "mount /dev/shm or /proc",
    5: "chroot",
    6: "dup3",
    7: "mount the scratch dir",
    8: "chdir",
    9: "setrlimit",
    10: "switch uid",
    11: "no_new_privs",
    12: "seccomp",
    13: "write",
    14: "read the code",
}


class _GnMount(ctypes.Structure):
    _fields_ = (
        ("source", ctypes.c_char_p),
        ("target", ctypes.c_char_p),
        ("fstype", ctypes.c_char_p),
        ("flags", ctypes.c_ulong),
        ("data", ctypes.c_char_p),
    )


class _GnRlimit(ctypes.Structure):
    _fields_ = (("resource", ctypes.c_int), ("cur", ctypes.c_ulong), ("max", ctypes.c_ulong))


class _GnPlan(ctypes.Structure):
    _fields_ = (
        ("msg", ctypes.c_char_p),
        ("msg_len", ctypes.c_size_t),
        ("scratch", _GnMount),
        ("has_scratch", ctypes.c_int),
        ("workdir", ctypes.c_char_p),
        ("rlimits", _GnRlimit * 8),
        ("n_rlimits", ctypes.c_int),
        ("uid", ctypes.c_int),
        ("session", ctypes.c_int),
    )


class _GnConfig(ctypes.Structure):
    _fields_ = (
        ("namespaces", ctypes.c_int),
        ("own_pidns", ctypes.c_int),
        ("mounts", ctypes.POINTER(_GnMount)),
        ("n_mounts", ctypes.c_int),
        ("skeleton", ctypes.c_char_p),
        ("seccomp", ctypes.c_void_p),
        ("ready_mark", ctypes.c_char_p),
        ("ready_mark_len", ctypes.c_size_t),
    )


# struct gn_result in callsetup.c: stage, error, msg_len, plan, source, source_len (native layout)
_GN_RESULT = struct.Struct("@iiniPN")


def build_call_setup(cache_dir: str, build_dir: str) -> tuple[str | None, str | None]:
    """Compile ``callsetup.c`` (or reuse the build of the same source); return (library path, None) or
    (None, why not). The cache is used only when it is a directory of ours that no one else can write."""
    import hashlib
    import subprocess

    try:
        with open(CALL_SETUP_C, "rb") as fh:
            source = fh.read()
    except OSError:
        return None, "callsetup.c not found: call setup in Python"
    info = os.stat(cache_dir)
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        cache_dir = build_dir
    flags = ["-O2", "-shared", "-fPIC", "-Wl,-z,now"]  # bound at load, in the zygote: no lazy binding per call
    digest = hashlib.sha256(source + " ".join([platform.machine(), *flags]).encode()).hexdigest()[:16]
    target = os.path.join(cache_dir, f"callsetup-{digest}.so")
    if os.path.exists(target):
        return target, None
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None, "no C compiler: call setup in Python (slower)"
    partial = os.path.join(build_dir, f"callsetup-{digest}.{os.getpid()}.so")
    try:
        done = subprocess.run(
            [compiler, *flags, "-o", partial, CALL_SETUP_C],
            capture_output=True,
            timeout=60,
        )
        if done.returncode != 0:
            why = done.stderr.decode(errors="replace").strip()[-300:]
            return None, f"compiling callsetup.c failed: {why}; call setup in Python"
        os.chmod(partial, 0o755)  # a container's unprivileged user loads the host's build
        shutil.move(partial, target)  # a rename where both are on one filesystem: never a half-written file
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"compiling callsetup.c failed ({exc}): call setup in Python"
    return target, None


class CallSetup:
    """``callsetup.c`` loaded in a zygote: its loop forks call processes and sets them up in C."""

    def __init__(self, library: str, iso: Isolation, own_pidns: int) -> None:
        self.lib = ctypes.PyDLL(library, use_errno=True)  # GIL held through fork: see fork_bare
        self.lib.gn_post.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
        self.lib.gn_kill_call.argtypes = (ctypes.c_int,)
        self.lib.gn_zygote_serve.argtypes = (ctypes.c_int, ctypes.c_int)
        # Read in one unpack, in the call process: each ctypes field read touches several objects, and every
        # object a forked child touches costs a page copy.
        result = (ctypes.c_char * _GN_RESULT.size).in_dll(self.lib, "gn_result")
        self.read_result = functools.partial(_GN_RESULT.unpack_from, result)
        self.msg = ctypes.addressof(ctypes.c_char.in_dll(self.lib, "gn_msg"))
        self.pending = ctypes.addressof(ctypes.c_char.in_dll(self.lib, "gn_pending"))
        self.pending_len = ctypes.c_ssize_t.in_dll(self.lib, "gn_pending_len")
        mounts = (_GnMount * max(1, len(_READY_MOUNTS)))()
        for i, (source, target, fstype, flags, data) in enumerate(_READY_MOUNTS):
            mounts[i] = _GnMount(source, target, fstype, flags.value, data)
        self.config = _GnConfig(
            int(iso.namespaces),
            own_pidns,
            mounts,
            len(_READY_MOUNTS),
            iso.skeleton.encode() if iso.skeleton else None,
            ctypes.addressof(iso.seccomp.fprog) if iso.seccomp is not None else None,
            READY_MARK,
            len(READY_MARK),
        )
        self._keep = mounts
        self.lib.gn_configure(ctypes.byref(self.config))

    def add_plan(self, index: int, msg: bytes, plan: _Plan) -> None:
        c = _GnPlan(msg=msg, msg_len=len(msg), workdir=plan.workdir.encode(), uid=plan.uid or 0)
        c.session = int(plan.session)
        if plan.scratch_mount:
            source, target, fstype, flags, data = plan.scratch_mount
            c.scratch, c.has_scratch = _GnMount(source, target, fstype, flags.value, data), 1
        for i, (which, (cur, max_)) in enumerate(plan.rlimits):
            c.rlimits[i] = _GnRlimit(which, cur, max_)
        c.n_rlimits = len(plan.rlimits)
        plan.c = c
        self.lib.gn_plan_set(index, ctypes.byref(c))

    def clear_plans(self) -> None:
        self.lib.gn_plans_clear()

    def serve(self, iso: Isolation, wake_fd: int, ready_calls: int) -> None:
        """The zygote's loop, in C (never returns); Python answers only requests of no cached plan."""
        lib = self.lib
        while True:
            event = lib.gn_zygote_serve(wake_fd, ready_calls)
            if event == 1:
                event = self._answer(iso)
            if event == 2:  # we are a call process forked by the loop
                _ready_child_c(iso)  # never returns
            if event < 0:
                raise OSError(ctypes.get_errno(), "the zygote's poll failed")

    def _answer(self, iso: Isolation) -> int:
        """Answer the pending request, of no cached plan (see ``_new_request``)."""
        kind, value = _new_request(iso, ctypes.string_at(self.pending, self.pending_len.value))
        if kind == "plan":
            return self.lib.gn_hand_off()
        self.lib.gn_drop_pending()
        if kind == "kill":
            self.lib.gn_kill_call(value)
        else:
            reply = json.dumps({"error": value}).encode()
            self.lib.gn_post(reply, len(reply))
        return 0


_CALL_SETUP: CallSetup | None = None  # in a zygote that loaded callsetup.c, and in its call processes
_PLAN_LIST: list[_Plan] = []  # the plans of _PLANS in insertion order: callsetup.c knows them by index


# ----------------------------------------------------------------------------- the zygote: forks calls

# Messages on the worker <-> zygote socket (SOCK_SEQPACKET, one JSON object a packet):
#   worker -> zygote  {"op", "language", "limits", "uid", "scratch"} + the call's fds  -> {"pid"} | {"error"}
#                     {"kill": pid}: SIGKILL the call's process group, if that pid is still an unreaped call
#   zygote -> worker  {"exits": [[pid, wait status], ...]}, sent after it reaped them
ZYGOTE_PACKET = 1 << 16
READY_CALLS = 2  # call processes each zygote keeps forked ahead of their calls (--ready)
_PLANS: dict[bytes, _Plan] = {}  # request bytes -> plan, in the zygote and (as forked) its ready processes
_READY_MOUNTS: list[tuple] = []  # /dev/shm and /proc in the skeleton, mounted by every ready process


def _zygote_serve(sock: socket.socket, iso: Isolation, ready_calls: int = READY_CALLS) -> None:
    """The zygote's loop (never returns): fork a call process for each request, reap them, report exits.

    The worker does not fork calls itself: every fork write-protects the forking process's pages, and the
    worker's event loop then touches hundreds of them per call, each one a page fault and usually a copy.
    The zygote is a fresh interpreter (see ``Zygote._start``) that runs only this small loop. It exits,
    killing its calls, when the worker hangs up. It never blocks on a send (the socket holds only 10
    packets each way): replies wait in an outbox until the worker reads."""
    global _CALL_STREAMS, _CALL_SETUP, _MAIN_AHEAD
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    fd = sock.detach()
    if fd != 3:
        os.dup2(fd, 3, inheritable=False)
    null = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1):  # in stdio mode these are the protocol stream: only the worker may hold it
        os.dup2(null, std)
    os.closerange(4, 65536)  # the listening socket, the worker's loop and its clients are not ours
    sock = socket.socket(fileno=3)
    try:  # without namespaces, what calls leave behind is re-parented to us and swept (_zygote_reap)
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
    _CALL_STREAMS = _std_streams()
    _MAIN_AHEAD = _new_main(CALL_WORKDIR)
    calls: set[int] = set()
    ready: collections.deque[tuple[int, socket.socket]] = collections.deque()
    if iso.namespaces:
        skel = iso.skeleton
        _READY_MOUNTS[:] = [
            (
                b"tmpfs",
                f"{skel}/dev/shm".encode(),
                b"tmpfs",
                ctypes.c_ulong(MS_NOSUID | MS_NODEV | MS_NOEXEC),
                b"size=16m,mode=1777",
            ),
            (b"proc", f"{skel}/proc".encode(), b"proc", ctypes.c_ulong(MS_NOSUID | MS_NODEV | MS_NOEXEC), None),
        ]
    if iso.call_setup:
        _CALL_SETUP = CallSetup(iso.call_setup, iso, own_pidns)
    outbox: collections.deque[bytes] = collections.deque()
    poller = select.poll()
    poller.register(3, select.POLLIN)
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
        poller.modify(3, select.POLLIN | (select.POLLOUT if outbox else 0))

    def post(reply: dict) -> None:
        outbox.append(json.dumps(reply).encode())
        flush()

    gc.collect()
    gc.freeze()
    _libc.malloc_trim(0)  # each page still mapped is copied by every fork and torn down at every exit
    if _CALL_SETUP:
        sock.send(json.dumps({"subreaper": subreaper}).encode())
        _CALL_SETUP.serve(iso, wake_r, ready_calls)  # never returns
    for _ in range(ready_calls):
        ready.append(_fork_ready(iso, own_pidns))
    post({"subreaper": subreaper})
    while True:
        events = dict(poller.poll())
        if wake_r in events:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 512)
        exits = _zygote_reap(iso, calls, ready)
        if exits:
            post({"exits": exits})
        elif events.get(3, 0) & select.POLLOUT:
            flush()
        if not events.get(3, 0) & (select.POLLIN | select.POLLHUP):
            continue
        try:
            msg, fds, _, _ = socket.recv_fds(sock, ZYGOTE_PACKET, 8)
        except OSError:
            msg, fds = b"", []
        if not msg:  # the worker is gone: so are its calls
            for pid in calls:
                _killpg(pid)
            os._exit(0)
        if msg not in _PLANS:
            kind, value = _new_request(iso, msg)
            if kind != "plan":
                for fd in fds:
                    os.close(fd)
                if kind == "kill" and value in calls:
                    _killpg(value)
                elif kind == "error":
                    post({"error": value})
                continue
        try:
            tries = len(ready) + 3
            for attempt in range(tries):  # hand the call to a ready process; skip any that died waiting
                pid, ctl = ready.popleft() if ready else _fork_ready(iso, own_pidns)
                try:
                    socket.send_fds(ctl, [msg], fds)
                    break
                except OSError:
                    if attempt == tries - 1:
                        raise
                finally:
                    ctl.close()
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
                ready.append(_fork_ready(iso, own_pidns))
            except OSError:
                break


def _new_request(iso: Isolation, msg: bytes) -> tuple[str, Any]:
    """A request of no cached plan: ``("kill", pid)``, ``("plan", its plan)`` (cached when requests of its
    shape can share it), or ``("error", why)``."""
    try:
        req = json.loads(msg)
        if "kill" in req:
            return "kill", int(req["kill"])
        plan = _Plan(iso, req)
    except Exception as exc:
        return "error", f"bad request: {type(exc).__name__}: {exc}"
    if req.get("scratch") is None:  # requests of one shape (op, limits, uid) share a plan
        _cache_plan(msg, plan)
    return "plan", plan


def _cache_plan(msg: bytes, plan: _Plan) -> None:
    if len(_PLANS) >= 64:
        _PLANS.clear()
        _PLAN_LIST.clear()
        if _CALL_SETUP:
            _CALL_SETUP.clear_plans()
    _PLANS[msg] = plan
    _PLAN_LIST.append(plan)
    if _CALL_SETUP:
        _CALL_SETUP.add_plan(len(_PLAN_LIST) - 1, msg, plan)


def _fork_ready(iso: Isolation, own_pidns: int) -> tuple[int, socket.socket]:
    """Fork a call process ahead of its call (see ``_ready_child``); return its pid and control socket."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        if iso.namespaces:  # the call is pid 1 of a new pid namespace: when it exits, all it started dies
            unshare(CLONE_NEWPID)
        try:
            pid = fork_bare()
            if pid == 0:
                _ready_child(iso, theirs.fileno())  # never returns
        finally:
            if iso.namespaces:  # our own later children belong in our own pid namespace again
                setns(own_pidns, CLONE_NEWPID)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return pid, ours


def _zygote_reap(iso: Isolation, calls: set[int], ready: collections.deque) -> list[list[int]]:
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
            _killpg(pid)  # stragglers of this call die with it
        status = os.waitpid(pid, 0)[1]
        if pid in calls:
            calls.discard(pid)
            exits.append([pid, status])
        else:  # an orphan: whatever it started is re-parented to us now
            orphans += 1
    if (exits or orphans) and not iso.namespaces:
        _sweep_orphans(calls | {pid for pid, _ in ready})
    return exits


def _sweep_orphans(keep: set[int]) -> None:
    """Without pid namespaces, kill what calls left behind: processes re-parented to us (a child subreaper)
    that are not in ``keep`` (live calls and processes forked ahead)."""
    me = os.getpid()
    for _ in range(10):
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            pid, ppid = int(entry), int(fields[1])
            if ppid != me or pid in keep:
                continue
            found = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):  # only what we killed: a call's exit is reported
                os.waitpid(pid, os.WNOHANG)
        if not found:
            return


class Zygote:
    """The worker's handle on its zygote (see ``_zygote_serve``): spawn calls, kill them, hear of exits."""

    def __init__(self, iso: Isolation, loop: EventLoop, ready_calls: int = READY_CALLS) -> None:
        self.iso, self.loop, self.ready_calls = iso, loop, ready_calls
        self.on_exit: dict[int, Callable[[int | None], None]] = {}  # pid -> callback(wait status | None)
        self._exits: list[list[int]] = []
        self._start()

    def _start(self) -> None:
        """Start a fresh interpreter as the zygote: forked from this worker it would carry ~5 MB of the
        daemon's and worker's heap that every call's fork then copies and every exit tears down (~40%
        more memory mapped, ~20% of a call's CPU is fork + exit)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        flags = [flag for flag, on in (("-I", sys.flags.isolated), ("-S", sys.flags.no_site)) if on]
        script = _ZYGOTE_SCRIPT or os.path.abspath(__file__)
        argv = [
            sys.executable,
            *flags,
            script,
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
        hello = ours.recv(ZYGOTE_PACKET)
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
                msg = self.sock.recv(ZYGOTE_PACKET)
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
            msg = self.sock.recv(ZYGOTE_PACKET, socket.MSG_DONTWAIT)
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
            _sweep_orphans({self.pid})
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
            _killpg(pid)
        _reap_all()
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
        _kill(self.pid, signal.SIGKILL)


def _reap_all() -> None:
    """Collect every exited child, without waiting."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


# ----------------------------------------------------------------------------- the daemon side


class EventLoop:
    """A small callback loop over ``selectors``: a worker's requests, pipes and timers (all it needs)."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self._readers: dict[int, object] = {}
        self._writers: dict[int, object] = {}
        self._timers: list[list] = []  # heap of [when, seq, callback]; a cancelled timer's callback is None
        self._seq = 0
        self.stopping = False

    def _update(self, fd: int) -> None:
        events = (selectors.EVENT_READ if fd in self._readers else 0) | (
            selectors.EVENT_WRITE if fd in self._writers else 0
        )
        registered = fd in self.selector.get_map()
        if not events:
            if registered:
                self.selector.unregister(fd)
        elif registered:
            self.selector.modify(fd, events)
        else:
            self.selector.register(fd, events)

    def add_reader(self, fd: int, callback) -> None:
        self._readers[fd] = callback
        self._update(fd)

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            self._update(fd)

    def add_writer(self, fd: int, callback) -> None:
        self._writers[fd] = callback
        self._update(fd)

    def remove_writer(self, fd: int) -> None:
        if self._writers.pop(fd, None) is not None:
            self._update(fd)

    def call_later(self, delay: float, callback) -> list:
        self._seq += 1
        timer = [time.monotonic() + delay, self._seq, callback]
        heapq.heappush(self._timers, timer)
        return timer

    @staticmethod
    def cancel(timer: list | None) -> None:
        if timer is not None:
            timer[2] = None

    @staticmethod
    def _call(callback) -> None:
        try:
            callback()
        except Exception:  # a bug in one call's handling must not take the daemon down
            traceback.print_exc()

    def run(self) -> None:
        while not self.stopping:
            timeout = 1.0
            while self._timers and self._timers[0][2] is None:
                heapq.heappop(self._timers)
            if self._timers:
                timeout = min(timeout, max(0.0, self._timers[0][0] - time.monotonic()))
            for key, mask in self.selector.select(timeout):
                if mask & selectors.EVENT_READ and key.fd in self._readers:
                    self._call(self._readers[key.fd])
                if mask & selectors.EVENT_WRITE and key.fd in self._writers:
                    self._call(self._writers[key.fd])
            now = time.monotonic()
            while self._timers and (self._timers[0][0] <= now or self._timers[0][2] is None):
                callback = heapq.heappop(self._timers)[2]
                if callback is not None:
                    self._call(callback)


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
        while len(self.inbox) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self.inbox)
            if length > MAX_FRAME:
                self.close()
                return
            if len(self.inbox) < _HEADER.size + length:
                break
            body = bytes(self.inbox[_HEADER.size : _HEADER.size + length])
            del self.inbox[: _HEADER.size + length]
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


class _Run(_StdinFeeder):
    """One ``run`` call: spawn, feed the code and stdin, collect output under the cap, enforce the wall
    timeout, reply. The code goes ahead of stdin on the call's stdin pipe as one frame, so requests to the
    zygote stay small whatever the code's size."""

    def __init__(self, server: Server, req: dict, slot: int, done) -> None:
        self.server, self.loop, self.done = server, server.loop, done
        limits = _limits_for(req)
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
        self.stdin = memoryview(_HEADER.pack(len(code)) + code + stdin)
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
            result = _outcome(bytes(self.bufs[self.out_r]), stderr, rc, self.timed_out, self.truncated, duration)
        self.done(result)


class _SessionRun(_StdinFeeder):
    """One ``session_run``: hand the session process new std streams and the code, collect its output."""

    def __init__(self, server: Server, sid: str, sess: dict, req: dict, done) -> None:
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
        result = _outcome(
            bytes(self.bufs[self.out_r]), bytes(self.bufs[self.err_r]), rc, self.timed_out, self.truncated, duration
        )
        if rc is None:  # timed out, flooded or died: the session process must go and its state is lost
            self.server.end_session(self.sid)
            result["session_lost"] = True
            if not (self.timed_out or self.truncated):
                result["stderr"] += "\n[the session process died (killed by a limit or a crash)]"
        self.done(result)


class Server:
    """The requests of one daemon process: calls bounded by slots, sessions, info, shutdown."""

    def __init__(
        self,
        iso: Isolation,
        slots: range,
        idle_exit_s: float,
        session_uids: range = range(0),
        ready_calls: int = READY_CALLS,
    ) -> None:
        self.iso = iso
        self.loop = EventLoop()
        self.zygote = Zygote(iso, self.loop, ready_calls)
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
                self._with_slot(guarded(lambda slot, done: _Run(self, req, slot, done)))
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
        spec = {"op": "session_open", "limits": _limits_for(req), "uid": uid, "scratch": scratch}

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
            self.sessions[sid] = {"pid": pid, "sock": parent_sock, "limits": _limits_for(req)}
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
            _SessionRun(self, sid, sess, req, done)

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
        _reap_all()  # a zygote that died, and orphans re-parented to us
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


def _outcome(stdout: bytes, stderr: bytes, rc: int | None, timed_out: bool, truncated: bool, duration: float) -> dict:
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


def _killpg(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


_CALL_SYS_PATH: list[str] = []  # the interpreter's sys.path minus entries that do not exist (python311.zip)


def _prepare_to_fork() -> None:
    """Do once in the zygote, the process that forks calls, what every call would otherwise repeat: import the modules
    user code commonly needs, scrub the environment the calls inherit (``os.environ.clear()`` unsets one
    variable at a time, ~150 us per call), and settle the calls' ``sys.path``."""
    for name in WARM_MODULES:
        __import__(name)
    os.environ.clear()
    os.environ.update(SCRUBBED_ENV, HOME=CALL_WORKDIR, TMPDIR=CALL_WORKDIR)  # per call without namespaces
    _CALL_SYS_PATH[:] = [p for p in sys.path if p and os.path.isdir(p)]


def _serve_worker(server: Server, listener: socket.socket) -> None:
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


def serve_socket(args) -> None:
    """Bind the socket, set up isolation once, pre-fork one worker per core, wait for them all to exit."""
    runtime_dir = tempfile.mkdtemp(prefix="gym_nemo_fs_", dir=args.runtime_dir)  # removed at exit
    _compile_zygote_script(runtime_dir)
    iso = Isolation(not args.no_namespaces, args.base_uid, args.slots, runtime_dir)
    iso.use_call_setup(args.call_setup, args.runtime_dir, args.call_setup_lib)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(args.socket)
    os.chmod(args.socket, 0o600)
    listener.listen(1024)
    workers = max(1, args.workers or os.cpu_count() or 1)
    # Every worker runs up to ``slots`` calls at once (connections are not spread evenly over workers, so
    # splitting the slots would let one busy worker serialise its clients); uid ranges stay disjoint.
    per_sessions = args.max_sessions // workers
    session_base = workers * args.slots
    pids = []
    for w in range(workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                server = Server(
                    iso,
                    range(w * args.slots, (w + 1) * args.slots),
                    args.idle_exit,
                    range(session_base + w * per_sessions, session_base + (w + 1) * per_sessions),
                    args.ready,
                )
                _serve_worker(server, listener)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        pids.append(pid)
    listener.close()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: [_kill(p, signal.SIGTERM) for p in pids])
    print(json.dumps({"ready": True, "pid": os.getpid(), "workers": pids, **iso.describe()}), flush=True)
    try:
        while True:  # until every worker has exited
            try:
                os.wait()
            except ChildProcessError:
                break
    finally:
        iso.cleanup()
        shutil.rmtree(runtime_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(args.socket)


def serve_stdio(args) -> None:
    """Serve one client over stdin/stdout (e.g. ``docker exec -i`` or an attached container)."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    runtime_dir = tempfile.mkdtemp(prefix="gym_nemo_fs_", dir=args.runtime_dir)
    _compile_zygote_script(runtime_dir)
    iso = Isolation(not args.no_namespaces, args.base_uid, args.slots, runtime_dir)
    iso.use_call_setup(args.call_setup, args.runtime_dir, args.call_setup_lib)
    sessions = range(args.slots, args.slots + args.max_sessions)
    server = Server(iso, range(args.slots), args.idle_exit, sessions, args.ready)
    out = os.dup(1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # nothing else may write into the protocol stream
    os.set_blocking(0, False)
    os.set_blocking(out, False)
    conn = Connection(server, 0, out, on_close=server._stop)  # the client hanging up ends the server
    conn.send({"ready": True, "pid": os.getpid(), **iso.describe()})
    try:
        server.serve()
    finally:
        iso.cleanup()
        shutil.rmtree(runtime_dir, ignore_errors=True)


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


_ZYGOTE_SCRIPT = ""  # this file compiled into the daemon's runtime dir (see _compile_zygote_script)


def _compile_zygote_script(runtime_dir: str) -> None:
    """Compile this file once for the zygotes: started from source, a zygote would compile it itself and
    keep the compiler's leftovers (~4 MB of heap) that every call's fork then copies."""
    global _ZYGOTE_SCRIPT
    import py_compile

    target = os.path.join(runtime_dir, "forkserver.pyc")
    _ZYGOTE_SCRIPT = py_compile.compile(os.path.abspath(__file__), cfile=target, doraise=True)


def _zygote_main(fd: int, state: str, ready_calls: int) -> None:
    """``forkserver.py --zygote FD STATE READY``: a worker's zygote, a fresh interpreter on socket FD."""
    iso = Isolation.restore(state)
    _prepare_to_fork()
    _zygote_serve(socket.socket(fileno=fd), iso, ready_calls)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--zygote"]:
        _zygote_main(int(argv[1]), argv[2], int(argv[3]))
        return
    import argparse

    parser = argparse.ArgumentParser(description="gym_nemo fork server")
    parser.add_argument("--socket", help="serve on this unix socket (default: stdio)")
    parser.add_argument("--slots", type=int, default=max(2, os.cpu_count() or 2), help="calls a worker runs at once")
    parser.add_argument("--base-uid", type=int, default=61000, help="slot k runs as uid base+k (0: no switch)")
    parser.add_argument("--no-namespaces", action="store_true")
    parser.add_argument("--runtime-dir", help="where to make the private dir for the skeleton root and scratch dirs")
    parser.add_argument("--idle-exit", type=float, default=0.0, help="exit after this many idle seconds (0: never)")
    parser.add_argument("--workers", type=int, default=0, help="pre-forked server processes (default: one per core)")
    parser.add_argument("--max-sessions", type=int, default=1024)
    parser.add_argument("--ready", type=int, default=READY_CALLS, help="call processes forked ahead, per worker")
    parser.add_argument(
        "--call-setup", choices=("auto", "python"), default="auto", help="auto: in C where callsetup.c compiles"
    )
    parser.add_argument("--call-setup-lib", help="a build of callsetup.c to load instead of compiling it")
    args = parser.parse_args(argv)
    if args.socket:
        serve_socket(args)
    else:
        serve_stdio(args)


if __name__ == "__main__":
    main()
