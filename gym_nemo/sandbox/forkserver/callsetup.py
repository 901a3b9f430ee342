"""``callsetup.c``, the zygote's loop and each call process's setup in C: built, checked and driven here.

A forked Python process copies every page it writes, and each Python statement writes to the objects it
touches: forking, preparing, receiving a call and applying its plan cost ~300 page faults per call in
Python. So where the host has a C compiler, the daemon compiles ``callsetup.c`` once per source version
(``build_call_setup``), and each zygote loads it (``CallSetup``) and runs its loop in C; Python answers
only requests of no cached plan. Without a compiler the same steps run in Python (``call.py`` and
``zygote.py``). What both sides share is in ``callsetup.h`` (see ``abi.py``).
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import platform
import shutil
from collections.abc import Callable
from typing import Any, NoReturn

from . import abi
from .call import CallContext, ready_child_c
from .limits import Plan
from .protocol import READY_MARK

HERE = os.path.dirname(os.path.abspath(__file__))
CALL_SETUP_C = os.path.join(HERE, "callsetup.c")
_Mount, _Rlimit = abi.STRUCTS["gn_mount"], abi.STRUCTS["gn_rlimit"]
_Plan, _Config = abi.STRUCTS["gn_plan"], abi.STRUCTS["gn_config"]


def build_call_setup(cache_dir: str, build_dir: str) -> tuple[str | None, str | None]:
    """Compile ``callsetup.c`` (or reuse the build of the same source and header); return (library path,
    None) or (None, why not). The cache is used only when it is a directory of ours no one else can write."""
    import hashlib
    import subprocess

    try:
        with open(CALL_SETUP_C, "rb") as fh:
            source = fh.read()
        with open(abi.HEADER_FILE, "rb") as fh:
            source += fh.read()
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
    header_dir = os.path.dirname(abi.HEADER_FILE)
    try:
        done = subprocess.run(
            [compiler, *flags, "-I", header_dir, "-o", partial, CALL_SETUP_C],
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


def check_build(library: str) -> str | None:
    """Why the build ``library`` must not be used (it does not load, or was built from another header),
    or None: each struct's size as the compiler saw it (``gn_sizeof_*``) must be ctypes' size."""
    try:
        lib = ctypes.CDLL(library)
        for name, layout in abi.STRUCTS.items():
            size = ctypes.c_size_t.in_dll(lib, f"gn_sizeof_{name}").value
            if size != ctypes.sizeof(layout):
                return f"callsetup library {library} has struct {name} of {size} bytes, callsetup.h says otherwise"
    except (OSError, ValueError) as exc:
        return f"callsetup library does not load ({exc})"
    return None


class CallSetup:
    """``callsetup.c`` loaded in a zygote: its loop forks call processes and sets them up in C.

    ``namespaces``, ``skeleton`` and ``seccomp`` come from the daemon's ``Isolation``; ``ready_mounts`` are
    mounted by every call process (``/dev/shm`` and ``/proc``); ``own_pidns`` is the zygote's pid
    namespace, which it re-enters after forking each call process into a new one."""

    def __init__(self, library: str, iso: Any, ready_mounts: list[tuple], own_pidns: int) -> None:
        self.lib = ctypes.PyDLL(library, use_errno=True)  # GIL held through fork: see kernel.fork_bare
        self.lib.gn_post.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
        self.lib.gn_kill_call.argtypes = (ctypes.c_int,)
        self.lib.gn_zygote_serve.argtypes = (ctypes.c_int, ctypes.c_int)
        # Read in one unpack, in the call process: each ctypes field read touches several objects, and every
        # object a forked child touches costs a page copy.
        result = (ctypes.c_char * abi.RESULT.size).in_dll(self.lib, "gn_result")
        self.read_result = functools.partial(abi.RESULT.unpack_from, result)
        self.msg = ctypes.addressof(ctypes.c_char.in_dll(self.lib, "gn_msg"))
        self.pending = ctypes.addressof(ctypes.c_char.in_dll(self.lib, "gn_pending"))
        self.pending_len = ctypes.c_ssize_t.in_dll(self.lib, "gn_pending_len")
        mounts = (_Mount * max(1, len(ready_mounts)))()
        for i, (source, target, fstype, flags, data) in enumerate(ready_mounts):
            mounts[i] = _Mount(source, target, fstype, flags.value, data)
        self.config = _Config(
            int(iso.namespaces),
            own_pidns,
            mounts,
            len(ready_mounts),
            iso.skeleton.encode() if iso.skeleton else None,
            ctypes.addressof(iso.seccomp.fprog) if iso.seccomp is not None else None,
            READY_MARK,
            len(READY_MARK),
        )
        self._keep = mounts
        self.lib.gn_configure(ctypes.byref(self.config))

    def add_plan(self, index: int, msg: bytes, plan: Plan) -> None:
        """Tell the C loop that requests of exactly ``msg`` get ``plan`` (``index`` in the zygote's list)."""
        c = _Plan(msg=msg, msg_len=len(msg), workdir=plan.workdir.encode(), uid=plan.uid or 0)
        c.session = int(plan.session)
        if plan.scratch_mount:
            source, target, fstype, flags, data = plan.scratch_mount
            c.scratch, c.has_scratch = _Mount(source, target, fstype, flags.value, data), 1
        for i, (which, (cur, max_)) in enumerate(plan.rlimits):
            c.rlimits[i] = _Rlimit(which, cur, max_)
        c.n_rlimits = len(plan.rlimits)
        plan.c = c
        self.lib.gn_plan_set(index, ctypes.byref(c))

    def clear_plans(self) -> None:
        self.lib.gn_plans_clear()

    def serve(
        self, ctx: CallContext, wake_fd: int, ready_calls: int, new_request: Callable[[bytes], tuple[str, Any]]
    ) -> NoReturn:
        """The zygote's loop, in C (never returns). Python answers only requests of no cached plan, with
        ``new_request`` (see ``zygote.new_request``); a call process forked here becomes the call
        (``call.ready_child_c``). Names are looked up before the loop: a call process returns from it, and
        every object it touches on the way is a page copied."""
        serve, needs_python, child = self.lib.gn_zygote_serve, abi.SERVE_PYTHON, abi.SERVE_CHILD
        while True:
            event = serve(wake_fd, ready_calls)
            if event == needs_python:
                event = self._answer(new_request)
            if event == child:  # we are a call process forked by the loop
                ready_child_c(ctx)
            if event < 0:
                raise OSError(ctypes.get_errno(), "the zygote's poll failed")

    def _answer(self, new_request: Callable[[bytes], tuple[str, Any]]) -> int:
        """Answer the pending request, of no cached plan."""
        kind, value = new_request(ctypes.string_at(self.pending, self.pending_len.value))
        if kind == "plan":
            return self.lib.gn_hand_off()
        self.lib.gn_drop_pending()
        if kind == "kill":
            self.lib.gn_kill_call(value)
        else:
            reply = json.dumps({"error": value}).encode()
            self.lib.gn_post(reply, len(reply))
        return 0
