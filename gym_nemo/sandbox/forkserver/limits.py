"""A call's limits, and its plan: every step a call process takes between fork and the code, worked out
before the fork (in the zygote, which caches plans by request) so that the call process only applies it.

Limits a request may set (``DEFAULT_LIMITS``'s keys) become rlimits (CPU time, address space, file size,
open files, processes, no core dumps), a scratch tmpfs of ``scratch_mb`` and, in the worker, the wall
timeout and the output cap.
"""

from __future__ import annotations

import ctypes
import resource

from .kernel import MS_NODEV, MS_NOSUID

DEFAULT_LIMITS = {
    "timeout_s": 10.0,
    "memory_mb": 1024,
    "max_output_bytes": 1 << 20,
    "max_file_mb": 16,
    "max_open_files": 64,
    "max_processes": 64,
    "scratch_mb": 64,
}
CALL_WORKDIR = "/tmp"  # the scratch dir as calls see it inside the skeleton root


def limits_for(req: dict) -> dict:
    """``DEFAULT_LIMITS`` overridden by the request's known, set limits."""
    limits = dict(DEFAULT_LIMITS)
    limits.update({k: v for k, v in (req.get("limits") or {}).items() if k in DEFAULT_LIMITS and v is not None})
    return limits


class Plan:
    """Everything a call process does between fork and the code, worked out in the zygote before it forks.

    Every page a forked child writes is copied, and running Python writes to every object it touches, so
    the child runs as few statements over as few objects as it can: plain tuples made just before the
    fork, one syscall a line (this halved the child's cost compared with building them in the child).
    ``c`` is the plan as ``callsetup.c`` reads it, where that runs."""

    __slots__ = ("c", "env", "language", "rlimits", "scratch_mount", "session", "sys_path", "uid", "workdir")

    def __init__(self, req: dict, namespaces: bool, sys_path: list[str]) -> None:
        limits = limits_for(req)
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
        if namespaces:  # mounted by the call process inside its root, once it knows the call's uid
            uid = self.uid
            options = f"size={int(limits['scratch_mb'])}m,mode=700" + (f",uid={uid},gid={uid}" if uid else "")
            flags = ctypes.c_ulong(MS_NOSUID | MS_NODEV)
            self.scratch_mount = (b"tmpfs", CALL_WORKDIR.encode(), b"tmpfs", flags, options.encode())
            self.workdir = CALL_WORKDIR
        else:
            self.workdir = req["scratch"]
        self.env = None if self.workdir == CALL_WORKDIR else {"HOME": self.workdir, "TMPDIR": self.workdir}
        self.sys_path = [self.workdir, *sys_path]
        self.c = None
