"""What a fork server can enforce on this host, decided once by the daemon at start (``Isolation``).

With root ("namespaces" mode) the daemon enters an empty network namespace (loopback down) and a private
mount namespace holding the skeleton root every call is chrooted into: a read-only tmpfs with /usr, /etc
and the interpreter's prefix bound read-only, a few device nodes, empty /proc, /tmp and /dev/shm for each
call's own mounts; nothing of /root, /home, /work or /tmp of the host. Without root (or where that fails)
it falls back to process isolation: rlimits, process groups, the subreaper sweep, seccomp and a per-call
scratch dir on the host. ``describe()`` is what the ``info`` request answers.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import stat
import sys
import tempfile

from .callsetup import build_call_setup, check_build
from .kernel import (
    CLONE_NEWNET,
    CLONE_NEWNS,
    MS_BIND,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    libc,
    mount,
    unshare,
)
from .protocol import PROTOCOL
from .seccomp import SeccompFilter


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
        self.seccomp = SeccompFilter.for_this_machine()
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
        iso.seccomp = SeccompFilter.for_this_machine()
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
            problem = check_build(library)
            if problem:
                library, why = None, f"{problem}: call setup in Python"
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
            libc.umount2(self.skeleton.encode(), 2)  # MNT_DETACH
            with contextlib.suppress(OSError):
                os.rmdir(self.skeleton)
