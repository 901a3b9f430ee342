"""The gym_nemo fork server: runs untrusted code in isolated children of a warm interpreter.

Standalone on purpose (standard library only, Python >= 3.11): the local backend starts it as a daemon on
a unix socket shared by every env process on the machine, and the docker backend runs the same file inside
each container over one persistent stdio stream.

Protocol: frames of a 4-byte big-endian length + a UTF-8 JSON object, both ways. Requests carry ``id`` and
``op``: ``run`` | ``session_open`` | ``session_run`` | ``session_close`` | ``info`` | ``ping`` | ``shutdown``.

Per call (``run``), with root on the host ("namespaces" mode):
  fork -> own session/process group -> unshare(mount, pid, ipc, uts) -> fork again so the code runs as
  pid 1 of a fresh pid namespace (when it exits the kernel kills everything it started) -> fresh /proc and
  a fresh tmpfs scratch dir in a read-only skeleton root (/usr, /etc and the interpreter's prefix bound
  read-only; nothing of /root, /home, /work, /tmp of the host) -> chroot -> rlimits -> an unprivileged uid
  per slot -> no_new_privs + a seccomp filter -> scrubbed environment -> the code.
The daemon itself lives in an empty network namespace (loopback down), is a child subreaper, enforces
the wall timeout by killing the call's process group, and caps output. Without root it falls back to
rlimits, process groups, the subreaper sweep, seccomp and a per-call scratch dir, and ``info`` says so.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import gc
import io
import json
import os
import platform
import resource
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

# asyncio is imported by the processes that serve clients, never by the zygotes that fork calls: it doubles
# the memory a fork must copy (see _load_asyncio).
asyncio = None  # type: ignore[assignment]

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


async def read_frame(reader: asyncio.StreamReader) -> dict | None:
    try:
        header = await reader.readexactly(_HEADER.size)
        (length,) = _HEADER.unpack(header)
        if length > MAX_FRAME:
            raise ValueError(f"frame of {length} bytes exceeds the limit")
        return decode_body(await reader.readexactly(length))
    except asyncio.IncompleteReadError:
        return None


# ----------------------------------------------------------------------------- kernel interfaces

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

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


def _seccomp_program() -> bytes | None:
    """A classic-BPF seccomp filter for this architecture, or None where no table is known."""
    if platform.machine() != "x86_64":
        return None
    table = _X86_64
    ld_abs, jeq, jset, ret = 0x20, 0x15, 0x45, 0x06
    allow, kill = 0x7FFF0000, 0x80000000
    eperm, enosys = 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
    prog: list[tuple[int, int, int, int]] = [
        (ld_abs, 0, 0, 4),  # seccomp_data.arch
        (jeq, 1, 0, table["arch"]),
        (ret, 0, 0, kill),
        (ld_abs, 0, 0, 0),  # seccomp_data.nr
        (0x35, 0, 1, 0x40000000),  # jge: x32 ABI syscalls -> kill
        (ret, 0, 0, kill),
    ]
    for nr in sorted(table["deny"].values()):
        prog += [(jeq, 0, 1, nr), (ret, 0, 0, eperm)]
    prog += [(jeq, 0, 1, table["clone3"]), (ret, 0, 0, enosys)]  # libc falls back to clone(), which we inspect
    prog += [
        (jeq, 0, 4, table["clone"]),
        (ld_abs, 0, 0, 16),  # args[0] (low word): clone flags
        (jset, 0, 1, NS_FLAGS),
        (ret, 0, 0, eperm),
        (ret, 0, 0, allow),
    ]
    families = _ALLOWED_SOCKET_FAMILIES
    prog.append((jeq, 0, 2 + len(families) + 1, table["socket"]))
    prog.append((ld_abs, 0, 0, 16))  # args[0]: address family
    for i, family in enumerate(families):
        prog.append((jeq, len(families) - i, 0, family))
    prog.append((ret, 0, 0, 0x00050000 | errno.EACCES))
    prog.append((ret, 0, 0, allow))
    prog.append((ret, 0, 0, allow))
    return b"".join(struct.pack("HBBI", *ins) for ins in prog)


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


class SeccompFilter:
    """A seccomp program ready to install: built once in the parent, so the child only calls prctl."""

    def __init__(self, program: bytes) -> None:
        self._buffer = ctypes.create_string_buffer(program)
        self._fprog = _SockFprog(len(program) // 8, ctypes.addressof(self._buffer))

    def install(self) -> None:
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        _check(
            _libc.prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(self._fprog), 0, 0),
            "prctl(PR_SET_SECCOMP)",
        )


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
        self.scratch_base = None
        if not self.namespaces:
            # Outside the private runtime dir, so slot uids can reach their own dir (0711: not list others).
            self.scratch_base = tempfile.mkdtemp(prefix="gym_nemo_scratch_")
            os.chmod(self.scratch_base, 0o711)

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


def _limits_for(req: dict) -> dict:
    limits = dict(DEFAULT_LIMITS)
    limits.update({k: v for k, v in (req.get("limits") or {}).items() if k in DEFAULT_LIMITS and v is not None})
    return limits


def _setrlimits(limits: dict, cpu_s: int) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    mem = int(limits["memory_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    fsize = int(limits["max_file_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_NOFILE, (int(limits["max_open_files"]),) * 2)
    resource.setrlimit(resource.RLIMIT_NPROC, (int(limits["max_processes"]),) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _enter_sandbox(iso: Isolation, uid: int | None, limits: dict, cpu_s: int, scratch: str | None) -> str:
    """Everything between fork and the user's code. Returns the working directory."""
    if iso.namespaces:
        skel = iso.skeleton
        opts = f"size={int(limits['scratch_mb'])}m,mode=700" + (f",uid={uid},gid={uid}" if uid else "")
        mount("tmpfs", f"{skel}/tmp", "tmpfs", MS_NOSUID | MS_NODEV, opts)
        mount("tmpfs", f"{skel}/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=16m,mode=1777")
        mount("proc", f"{skel}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        os.chroot(skel)
        workdir = "/tmp"
    else:
        assert scratch is not None
        workdir = scratch
        if uid:
            os.chown(workdir, uid, uid)
    os.chdir(workdir)
    _setrlimits(limits, cpu_s)
    if uid:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    if iso.seccomp is not None:
        iso.seccomp.install()
    else:
        prctl(PR_SET_NO_NEW_PRIVS, 1)
    if os.environ.keys() - SCRUBBED_ENV.keys():  # normally scrubbed once before forking (_prepare_to_fork)
        os.environ.clear()
        os.environ.update(SCRUBBED_ENV)
    os.environ.update(HOME=workdir, TMPDIR=workdir)
    return workdir


def _redirect_std() -> None:
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8", errors="replace")
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace")
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True
    )


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _exec_python(code: str, namespace: dict, workdir: str) -> int:
    """Run ``code`` like ``python main.py`` would; return its exit status."""
    code = code.encode("utf-8", "surrogatepass").decode("utf-8", "replace")  # lone surrogates -> U+FFFD
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


def _fresh_main(workdir: str) -> dict:
    module = types.ModuleType("__main__")
    module.__dict__.update(__file__=os.path.join(workdir, "main.py"), __builtins__=builtins)
    sys.modules["__main__"] = module
    sys.argv = ["main.py"]
    sys.path[:] = [workdir, *_CALL_SYS_PATH]
    return module.__dict__


def _exec_program(language: str, code: str, workdir: str) -> None:
    """Replace this process with bash or a compiled C++ program (never returns)."""
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    if language == "bash":
        path = "main.sh"
        with open(path, "w", encoding="utf-8", errors="replace") as fh:
            fh.write(code)
        os.execve("/bin/bash", ["bash", "--noprofile", "--norc", path], dict(os.environ))
    path = "main.cpp"
    with open(path, "w", encoding="utf-8", errors="replace") as fh:
        fh.write(code)
    script = "g++ -std=c++17 -O2 -pipe -o main main.cpp 1>&2 || exit 125; exec ./main"
    os.execve("/bin/bash", ["bash", "--noprofile", "--norc", "-c", script], dict(os.environ))


def _child(iso: Isolation, uid: int | None, req: dict, fds: dict, scratch: str | None) -> None:
    """The forked child (never returns). ``fds``: stdin/stdout/stderr pipe ends, ``status``, ``ctl``."""
    code = 120
    try:
        gc.enable()
        atexit._clear()
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()
        # Move every fd we keep above the low numbers first, so no dup2 below clobbers another source.
        names = ["stdin", "stdout", "stderr", "status"] + (["ctl"] if "ctl" in fds else [])
        high = [fcntl.fcntl(fds[name], fcntl.F_DUPFD_CLOEXEC, 1000) for name in names]
        for target, fd in enumerate(high):
            os.dup2(fd, target)  # 0-2 inheritable (std streams), 3 = status, 4 = session control
        os.closerange(len(names), 65536)  # nothing of the daemon (its socket, its loop) stays reachable
        for target in range(3, len(names)):
            os.set_inheritable(target, False)
        limits = _limits_for(req)
        timeout = float(limits["timeout_s"])
        session = req["op"] == "session_open"
        cpu_s = int(timeout * (50 if session else 1)) + 1
        if iso.namespaces:  # we are pid 1 of a fresh pid namespace (see Spawner._fork)
            unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS)
        workdir = _enter_sandbox(iso, uid, limits, cpu_s, scratch)
        os.write(3, b"R")  # setup done: from here on, failures are the code's own
        os.close(3)
        language = req.get("language", "python")
        if language != "python":
            _exec_program(language, req.get("code", ""), workdir)
        _redirect_std()
        namespace = _fresh_main(workdir)
        if session:
            code = _session_loop(namespace, workdir)
        else:
            code = _exec_python(req.get("code", ""), namespace, workdir)
            with contextlib.suppress(BaseException):
                atexit._run_exitfuncs()
            _flush_std()
    except BaseException:
        with contextlib.suppress(OSError):
            os.write(2, INFRA_MARK + traceback.format_exc().encode(errors="replace"))
        code = 120
    finally:
        os._exit(code)


def _session_loop(namespace: dict, workdir: str) -> int:
    """Serve ``session_run`` requests: new std streams arrive with each request over the control socket."""
    ctl = socket.socket(fileno=4)
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
        status = _exec_python(request.get("code", ""), namespace, workdir)
        for target in (0, 1, 2):
            os.dup2(devnull, target)
        ctl.sendall(json.dumps({"exit_code": status}).encode())


# ----------------------------------------------------------------------------- spawning call processes

_FD_NAMES = ("stdin", "stdout", "stderr", "status", "ctl")


class Spawner:
    """Forks call processes in this process and collects their exit statuses.

    Forking costs in proportion to the forking process's memory, so the socket daemon runs this in a lean
    "zygote" process that never imports asyncio (``ZygoteClient`` talks to it), halving the fork cost.
    """

    def __init__(self, iso: Isolation) -> None:
        self.iso = iso
        self.tracked: set[int] = set()
        self.statuses: dict[int, int] = {}
        self._own_pidns: int | None = None

    def spawn(self, uid: int | None, req: dict, fds: dict, scratch: str | None) -> int:
        pid = self._fork()
        if pid == 0:
            _child(self.iso, uid, req, fds, scratch)
        self.tracked.add(pid)
        return pid

    def _fork(self) -> int:
        """With namespaces the child is pid 1 of a new pid namespace, so when it exits the kernel kills
        everything it started. One fork: unshare(CLONE_NEWPID) applies to our next child, then setns()
        puts our later children back in our own namespace."""
        if not self.iso.namespaces:
            return os.fork()
        if self._own_pidns is None:
            self._own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        unshare(CLONE_NEWPID)
        try:
            return os.fork()
        finally:
            if os.getpid() != 1:  # only the parent restores; the child is pid 1 of its namespace
                setns(self._own_pidns, CLONE_NEWPID)

    def _reap(self) -> None:
        """Collect every exited child; keep the statuses of the ones we track."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.tracked:
                self.statuses[pid] = status

    def wait(self, pid: int) -> int:
        """The exit status of a spawned process that has exited or was just killed."""
        self._reap()
        self.tracked.discard(pid)
        if pid in self.statuses:
            return self.statuses.pop(pid)
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return self.statuses.pop(pid, 0)

    def housekeep(self) -> None:
        """Reap what exited; without namespaces also kill processes re-parented to us (we are a subreaper)
        that belong to no live call."""
        if not self.iso.namespaces:
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
                    if ppid != me or pid in self.tracked:
                        continue
                    found = True
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self._reap()
                if not found:
                    break
        self._reap()


class ZygoteClient:
    """The worker's side of a zygote: the same interface as ``Spawner``, one blocking round trip each."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def _call(self, msg: dict, fds: list[int] = ()) -> dict:
        socket.send_fds(self.sock, [json.dumps(msg).encode()], list(fds))
        reply = self.sock.recv(1 << 16)
        if not reply:
            raise ConnectionError("the zygote is gone")
        return json.loads(reply)

    def spawn(self, uid: int | None, req: dict, fds: dict, scratch: str | None) -> int:
        names = [n for n in _FD_NAMES if n in fds]
        slim = {k: v for k, v in req.items() if k != "stdin"}  # stdin goes through its pipe, not the zygote
        msg = {"op": "spawn", "uid": uid, "req": slim, "scratch": scratch, "fds": names}
        return self._call(msg, [fds[n] for n in names])["pid"]

    def wait(self, pid: int) -> int:
        return self._call({"op": "wait", "pid": pid})["status"]

    def housekeep(self) -> None:
        self._call({"op": "housekeep"})


def _zygote(iso: Isolation, sock: socket.socket) -> None:
    """Serve one worker's spawn/wait/housekeep requests until it hangs up (never returns)."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    spawner = Spawner(iso)
    # Every page the zygote or a call writes after a fork is copied: keep the collector from walking (and
    # so touching) the warm heap in either. The zygote makes no reference cycles; calls re-enable it.
    gc.disable()
    gc.freeze()
    try:
        while True:
            msg, fds, _, _ = socket.recv_fds(sock, 1 << 20, len(_FD_NAMES))
            if not msg:
                break
            req = json.loads(msg)
            if req["op"] == "spawn":
                pid = spawner.spawn(req["uid"], req["req"], dict(zip(req["fds"], fds, strict=True)), req["scratch"])
                for fd in fds:
                    os.close(fd)
                reply = {"pid": pid}
            elif req["op"] == "wait":
                reply = {"status": spawner.wait(req["pid"])}
            else:
                spawner.housekeep()
                reply = {}
            sock.sendall(json.dumps(reply).encode())
    finally:
        for pid in list(spawner.tracked):  # the worker is gone: so are its calls and sessions
            _killpg(pid)
        spawner.housekeep()
        os._exit(0)


# ----------------------------------------------------------------------------- the daemon side


class Server:
    def __init__(
        self,
        iso: Isolation,
        slots: range,
        idle_exit_s: float,
        session_uids: range = range(0),
        spawner: Spawner | ZygoteClient | None = None,
    ) -> None:
        self.iso = iso
        self.spawner = spawner or Spawner(iso)
        # Slots bound how many calls execute at once; each has its own uid, so RLIMIT_NPROC is per call.
        self.slots: asyncio.Queue[int] = asyncio.Queue()
        for i in slots:
            self.slots.put_nowait(i)
        # Sessions idle between runs, so they hold a uid of their own (not a slot) for their lifetime and
        # take a slot only while a run executes.
        self.session_uids = list(session_uids)
        self.sessions: dict[str, dict] = {}
        self.clients = 0
        self.idle_exit_s = idle_exit_s
        self.last_activity = time.monotonic()
        self.stopping = asyncio.Event()

    # -- one call
    def uid_for(self, index: int) -> int | None:
        return self.iso.base_uid + index if self.iso.root and self.iso.base_uid > 0 else None

    async def execute(self, req: dict, slot: int) -> dict:
        loop = asyncio.get_running_loop()
        limits = _limits_for(req)
        timeout = float(limits["timeout_s"])
        cap = int(limits["max_output_bytes"])
        scratch = None if self.iso.namespaces else tempfile.mkdtemp(dir=self.iso.scratch_base)
        stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        start = time.monotonic()
        fds = {"stdin": stdin_r, "stdout": out_w, "stderr": err_w, "status": status_w}
        pid = self.spawner.spawn(self.uid_for(slot), req, fds, scratch)
        for fd in (stdin_r, out_w, err_w, status_w):
            os.close(fd)
        try:
            result = await self._collect(
                loop, pid, req.get("stdin", ""), stdin_w, out_r, err_r, status_r, timeout, cap, start
            )
        finally:
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)
            if not self.iso.namespaces:  # with namespaces the call's pid namespace took everything with it
                self.spawner.housekeep()
        return result

    async def _collect(self, loop, pid, stdin_data, stdin_w, out_r, err_r, status_r, timeout, cap, start) -> dict:
        bufs = {out_r: bytearray(), err_r: bytearray()}
        ready = bytearray()
        done = loop.create_future()
        open_fds = {out_r, err_r, status_r}
        truncated = False
        try:
            pidfd: int | None = os.pidfd_open(pid)
        except OSError:  # no pidfds (e.g. gVisor): poll for the exit without reaping
            pidfd = None

        def finish_if_done() -> None:
            if not open_fds and exited.done() and not done.done():
                done.set_result(None)

        def on_read(fd: int) -> None:
            nonlocal truncated
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return
            if not chunk:
                loop.remove_reader(fd)
                open_fds.discard(fd)
                finish_if_done()
                return
            if fd == status_r:
                ready.extend(chunk)
                return
            buf = bufs[fd]
            room = cap - len(buf)
            buf.extend(chunk[: max(room, 0)])
            if len(chunk) > room and not truncated:
                truncated = True
                _killpg(pid)

        exited = loop.create_future()

        def on_exit() -> None:
            if pidfd is not None:
                loop.remove_reader(pidfd)
            if not exited.done():
                exited.set_result(None)
            _killpg(pid)  # stragglers of this call die with it
            if not self.iso.namespaces:
                self.spawner.housekeep()  # children that left the group were re-parented to the spawner
            finish_if_done()

        for fd in open_fds:
            os.set_blocking(fd, False)
            loop.add_reader(fd, on_read, fd)
        if pidfd is not None:
            loop.add_reader(pidfd, on_exit)
        else:

            def poll_exit() -> None:
                if exited.done():
                    return
                if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                    on_exit()
                else:
                    loop.call_later(0.002, poll_exit)

            poll_exit()
        writer_task = asyncio.ensure_future(self._feed_stdin(loop, stdin_w, stdin_data))
        timed_out = False
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout)
        except TimeoutError:
            timed_out = not truncated
            _killpg(pid)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(done), 5)
        finally:
            for fd in open_fds:
                loop.remove_reader(fd)
            if pidfd is not None:
                loop.remove_reader(pidfd)
                os.close(pidfd)
            writer_task.cancel()
            if not exited.done():
                exited.set_result(None)  # stops the exit poll
            status = self.spawner.wait(pid)
            for fd in (out_r, err_r, status_r):
                os.close(fd)
        duration = time.monotonic() - start
        rc = os.waitstatus_to_exitcode(status)
        stderr = bytes(bufs[err_r])
        if not ready:
            detail = stderr.split(INFRA_MARK, 1)[-1].decode("utf-8", "replace").strip()
            if timed_out:
                detail = "sandbox setup timed out"
            return {
                "infra_error": f"sandbox setup failed: {detail[-2000:] or f'exit status {rc}'}",
                "duration_s": duration,
            }
        return _outcome(bytes(bufs[out_r]), stderr, rc, timed_out, truncated, duration)

    @staticmethod
    async def _feed_stdin(loop, fd: int, data: str) -> None:
        payload = memoryview(data.encode("utf-8", "replace"))
        os.set_blocking(fd, False)
        try:
            while payload:
                try:
                    n = os.write(fd, payload)
                    payload = payload[n:]
                except BlockingIOError:
                    fut = loop.create_future()
                    loop.add_writer(fd, fut.set_result, None)
                    try:
                        await fut
                    finally:
                        loop.remove_writer(fd)
        except (BrokenPipeError, OSError):
            pass
        finally:
            os.close(fd)

    # -- sessions
    async def session_open(self, req: dict) -> dict:
        if not self.session_uids:
            return {"infra_error": "too many open sessions"}
        uid_index = self.session_uids.pop()
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        null = os.open("/dev/null", os.O_RDWR)
        scratch = None if self.iso.namespaces else tempfile.mkdtemp(dir=self.iso.scratch_base)
        fds = {"stdin": null, "stdout": null, "stderr": null, "status": status_w, "ctl": child_sock.fileno()}
        pid = self.spawner.spawn(self.uid_for(uid_index), {**req, "op": "session_open"}, fds, scratch)
        child_sock.close()
        for fd in (status_w, null):
            os.close(fd)
        loop = asyncio.get_running_loop()
        readable = loop.create_future()
        loop.add_reader(status_r, lambda: readable.done() or readable.set_result(None))
        try:
            await asyncio.wait_for(readable, 10)  # no threads here: this process forks
            ok = os.read(status_r, 1)
        except TimeoutError:
            ok = b""
        finally:
            loop.remove_reader(status_r)
            os.close(status_r)
        if ok != b"R":
            _killpg(pid)
            self.spawner.wait(pid)
            self.session_uids.append(uid_index)
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)
            return {"infra_error": "session setup failed"}
        sid = f"s{pid}"
        self.sessions[sid] = {
            "pid": pid,
            "sock": parent_sock,
            "uid_index": uid_index,
            "scratch": scratch,
            "limits": _limits_for(req),
        }
        return {"session": sid}

    async def session_run(self, req: dict) -> dict:
        sess = self.sessions.get(req.get("session", ""))
        if sess is None:
            return {"error": "unknown or closed session"}
        loop = asyncio.get_running_loop()
        limits = {**sess["limits"], **{k: v for k, v in (req.get("limits") or {}).items() if v is not None}}
        timeout = float(limits["timeout_s"])
        cap = int(limits["max_output_bytes"])
        stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        sock: socket.socket = sess["sock"]
        start = time.monotonic()
        socket.send_fds(sock, [json.dumps({"code": req.get("code", "")}).encode()], [stdin_r, out_w, err_w])
        for fd in (stdin_r, out_w, err_w):
            os.close(fd)
        bufs = {out_r: bytearray(), err_r: bytearray()}
        truncated = False
        reply = loop.create_future()

        def on_read(fd: int) -> None:
            nonlocal truncated
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return
            if not chunk:
                loop.remove_reader(fd)
                return
            room = cap - len(bufs[fd])
            bufs[fd].extend(chunk[: max(room, 0)])
            if len(chunk) > room and not reply.done():
                truncated = True
                reply.set_result(None)

        def on_reply() -> None:
            loop.remove_reader(sock.fileno())
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not reply.done():
                reply.set_result(data)

        for fd in (out_r, err_r):
            os.set_blocking(fd, False)
            loop.add_reader(fd, on_read, fd)
        loop.add_reader(sock.fileno(), on_reply)
        writer_task = asyncio.ensure_future(self._feed_stdin(loop, stdin_w, req.get("stdin", "")))
        timed_out = False
        data = None
        try:
            data = await asyncio.wait_for(reply, timeout)
        except TimeoutError:
            timed_out = True
        loop.remove_reader(sock.fileno())
        writer_task.cancel()
        # Drain what the run wrote before it answered.
        for fd in (out_r, err_r):
            loop.remove_reader(fd)
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except (BlockingIOError, OSError):
                    break
                if not chunk:
                    break
                room = cap - len(bufs[fd])
                bufs[fd].extend(chunk[: max(room, 0)])
                truncated = truncated or len(chunk) > room
            os.close(fd)
        duration = time.monotonic() - start
        rc = None if data is None or not data else json.loads(data)["exit_code"]
        result = _outcome(bytes(bufs[out_r]), bytes(bufs[err_r]), rc, timed_out, truncated, duration)
        if rc is None:  # timed out, flooded or died: the session process must go and its state is lost
            await self._end_session(req["session"])
            result["session_lost"] = True
            if not (timed_out or truncated):
                result["stderr"] += "\n[the session process died (killed by a limit or a crash)]"
        return result

    async def _end_session(self, sid: str) -> None:
        sess = self.sessions.pop(sid, None)
        if sess is None:
            return
        _killpg(sess["pid"])
        self.spawner.wait(sess["pid"])
        sess["sock"].close()
        if sess["scratch"]:
            shutil.rmtree(sess["scratch"], ignore_errors=True)
        self.session_uids.append(sess["uid_index"])
        self.spawner.housekeep()

    # -- dispatch
    async def handle(self, req: dict) -> dict:
        op = req.get("op")
        self.last_activity = time.monotonic()
        if op == "run":
            slot = await self.slots.get()
            try:
                return await self.execute(req, slot)
            finally:
                self.slots.put_nowait(slot)
        if op == "session_open":
            return await self.session_open(req)
        if op == "session_run":
            slot = await self.slots.get()  # bounds concurrency; the session keeps its own uid
            try:
                return await self.session_run(req)
            finally:
                self.slots.put_nowait(slot)
        if op == "session_close":
            await self._end_session(req.get("session", ""))
            return {"closed": True}
        if op == "info":
            return self.iso.describe()
        if op == "ping":
            return {"pong": True, "pid": os.getpid(), "supervisor": os.getppid()}
        if op == "shutdown":
            self.stopping.set()
            return {"stopping": True}
        return {"error": f"unknown op {op!r}"}

    async def serve_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.clients += 1
        lock = asyncio.Lock()
        owned_sessions: set[str] = set()

        async def respond(req: dict) -> None:
            try:
                reply = await self.handle(req)
            except ConnectionError as exc:  # our zygote is gone: stop, clients reconnect to a healthy worker
                self.stopping.set()
                reply = {"infra_error": f"fork server worker lost its zygote: {exc}"}
            except Exception as exc:  # a bug here must not take the daemon down
                reply = {"infra_error": f"fork server error: {type(exc).__name__}: {exc}"}
            if "session" in reply and req.get("op") == "session_open":
                owned_sessions.add(reply["session"])
            reply["id"] = req.get("id")
            async with lock:
                try:
                    writer.write(encode_frame(reply))
                    await writer.drain()
                except (ConnectionError, OSError):
                    pass

        tasks = set()
        try:
            while True:
                try:
                    req = await read_frame(reader)
                except (ValueError, ConnectionError):
                    break
                if req is None:
                    break
                task = asyncio.ensure_future(respond(req))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            for sid in owned_sessions:  # a client that goes away takes its sessions with it
                await self._end_session(sid)
            self.clients -= 1
            self.last_activity = time.monotonic()
            writer.close()

    async def idle_watch(self) -> None:
        while not self.stopping.is_set():
            await asyncio.sleep(1.0)
            self.spawner.housekeep()  # reap what exited, sweep what was re-parented
            if self.idle_exit_s > 0 and self.clients == 0 and time.monotonic() - self.last_activity > self.idle_exit_s:
                self.stopping.set()


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


def _load_asyncio() -> None:
    global asyncio
    import asyncio as _asyncio

    asyncio = _asyncio


_CALL_SYS_PATH: list[str] = []  # the interpreter's sys.path minus entries that do not exist (python311.zip)


def _prepare_to_fork() -> None:
    """Do once in the process that forks calls what every call would otherwise repeat: import the modules
    user code commonly needs, scrub the environment the calls inherit (``os.environ.clear()`` unsets one
    variable at a time, ~150 us per call), and settle the calls' ``sys.path``."""
    for name in WARM_MODULES:
        __import__(name)
    os.environ.clear()
    os.environ.update(SCRUBBED_ENV)
    _CALL_SYS_PATH[:] = [p for p in sys.path if p and os.path.isdir(p)]


async def _serve_worker(server: Server, listener: socket.socket) -> None:
    """One pre-forked worker: accept clients on the shared listening socket until idle or told to stop."""
    if os.geteuid() != 0:
        prctl(PR_SET_DUMPABLE, 0)  # calls share our uid here: keep them out of /proc/<pid>/mem and ptrace
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stopping.set)
    srv = await asyncio.start_unix_server(server.serve_stream, sock=listener)
    watcher = asyncio.ensure_future(server.idle_watch())
    try:
        await server.stopping.wait()
    finally:
        watcher.cancel()
        srv.close()
        for sid in list(server.sessions):
            await server._end_session(sid)


def serve_socket(args) -> None:
    """Bind the socket, set up isolation once, pre-fork one worker per core, wait for them all to exit."""
    _prepare_to_fork()
    runtime_dir = tempfile.mkdtemp(prefix="gym_nemo_fs_", dir=args.runtime_dir)  # removed at exit
    iso = Isolation(not args.no_namespaces, args.base_uid, args.slots, runtime_dir)
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
        worker_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if os.fork() == 0:  # the zygote: lean (no asyncio), it forks this worker's calls
            listener.close()
            worker_end.close()
            _zygote(iso, zygote_end)
        zygote_end.close()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _load_asyncio()
                server = Server(
                    iso,
                    range(w * args.slots, (w + 1) * args.slots),
                    args.idle_exit,
                    range(session_base + w * per_sessions, session_base + (w + 1) * per_sessions),
                    ZygoteClient(worker_end),
                )
                asyncio.run(_serve_worker(server, listener))
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        worker_end.close()
        pids.append(pid)
    listener.close()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: [_kill(p, signal.SIGTERM) for p in pids])
    print(json.dumps({"ready": True, "pid": os.getpid(), "workers": pids, **iso.describe()}), flush=True)
    try:
        while True:  # until every worker and zygote has exited (a zygote exits when its worker does)
            try:
                os.wait()
            except ChildProcessError:
                break
    finally:
        iso.cleanup()
        shutil.rmtree(runtime_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(args.socket)


async def serve_stdio(args) -> None:
    """Serve one client over stdin/stdout (e.g. ``docker exec -i`` or an attached container)."""
    _prepare_to_fork()
    prctl(PR_SET_CHILD_SUBREAPER, 1)  # calls fork from this process (no zygote in stdio mode)
    runtime_dir = tempfile.mkdtemp(prefix="gym_nemo_fs_", dir=args.runtime_dir)
    iso = Isolation(not args.no_namespaces, args.base_uid, args.slots, runtime_dir)
    server = Server(iso, range(args.slots), args.idle_exit, range(args.slots, args.slots + args.max_sessions))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_FRAME)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", 0))
    out = os.fdopen(os.dup(1), "wb", 0)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # nothing else may write into the protocol stream
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, out)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    writer.write(encode_frame({"ready": True, "pid": os.getpid(), **iso.describe()}))
    try:
        await server.serve_stream(reader, writer)
    finally:
        iso.cleanup()
        shutil.rmtree(runtime_dir, ignore_errors=True)


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def main(argv: list[str] | None = None) -> None:
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
    args = parser.parse_args(argv)
    if args.socket:
        serve_socket(args)
    else:
        _load_asyncio()
        asyncio.run(serve_stdio(args))


if __name__ == "__main__":
    main()
