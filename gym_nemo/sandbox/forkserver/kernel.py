"""The kernel interfaces the fork server calls through ctypes (namespaces, mounts, prctl, a bare fork) and
the process bookkeeping every one of its processes does (kill a call's group, reap, sweep orphans)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

libc = ctypes.CDLL("libc.so.6", use_errno=True)
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


def check(ret: int, what: str) -> None:
    """Raise ``OSError`` with errno for a libc call that returned non-zero."""
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns(fd: int, nstype: int) -> None:
    check(libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def unshare(flags: int) -> None:
    check(libc.unshare(ctypes.c_int(flags)), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    check(
        libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
        f"mount {target}",
    )


def fork_bare() -> int:
    """fork(2) without CPython's at-fork machinery, for a single-threaded forking process.

    ``os.fork`` runs every ``os.register_at_fork`` hook in the child: once ``threading`` is imported (any
    warm module that imports ``subprocess`` does) its hook alone roughly doubles the cost of a fork here,
    because it touches objects all over the heap and so copies their pages. With one thread and the GIL
    held through the call, the child's interpreter state is exactly the parent's and needs no repair;
    the one hook that matters, ``random``'s reseed, is redone in the call process (``call.run_call``)."""
    pid = _libc_gil.fork()
    if pid < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fork: {os.strerror(err)}")
    return pid


def prctl(option: int, arg: int = 0) -> None:
    check(libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), f"prctl({option})")


def killpg(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads, if it still exists."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def reap_all() -> None:
    """Collect every exited child, without waiting."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def sweep_orphans(keep: set[int]) -> None:
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
