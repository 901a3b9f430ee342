"""The daemon: the fork server's first process, started as ``python -I -S <this directory> [options]``.

It decides once what it can enforce (``Isolation``: namespaces, the skeleton root, seccomp, the C call
setup), compiles the package into its private runtime dir for the zygotes, and then either binds a unix
socket and pre-forks one worker per core on it (``serve_socket``: the local backend's machine-wide daemon,
and the docker backend's per-container server) or serves one client over stdin/stdout itself
(``serve_stdio``: a container attached to its client). It prints or sends ``{"ready": true, ...}`` with
what ``info`` reports once it serves, and removes its runtime dir when it exits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import tempfile
import traceback

from . import abi
from .isolation import Isolation
from .kernel import PR_SET_CHILD_SUBREAPER, kill, prctl
from .worker import Connection, Server, serve_worker

READY_CALLS = 2  # call processes each zygote keeps forked ahead of their calls (--ready)
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def compile_for_zygotes(runtime_dir: str) -> str:
    """Compile this package once into ``runtime_dir/zygote/forkserver`` (sourceless .pyc files, and
    ``_header.pyc``: ``abi.PARSED``, this daemon's parse of ``callsetup.h``); return the zygotes' entry point
    there. Started from source, a zygote would compile its modules itself and keep the compiler's leftovers
    (~4 MB of heap) that every call's fork then copies; a read-only package dir (a container's mount) holds
    no cached bytecode."""
    import py_compile

    target = os.path.join(runtime_dir, "zygote", "forkserver")
    os.makedirs(target)
    header = os.path.join(runtime_dir, "zygote", "_header.py")
    with open(header, "w", encoding="utf-8") as fh:
        fh.write(f"PARSED = {abi.PARSED!r}\n")
    py_compile.compile(header, cfile=os.path.join(target, "_header.pyc"), doraise=True)
    for name in sorted(os.listdir(PACKAGE_DIR)):
        if name.endswith(".py"):
            py_compile.compile(os.path.join(PACKAGE_DIR, name), cfile=os.path.join(target, name + "c"), doraise=True)
    return os.path.join(target, "__main__.pyc")


def _start(args: argparse.Namespace) -> tuple[str, Isolation, str]:
    """The daemon's private runtime dir (removed at exit), its isolation and the zygotes' entry point."""
    runtime_dir = tempfile.mkdtemp(prefix="gym_nemo_fs_", dir=args.runtime_dir)
    zygote_script = compile_for_zygotes(runtime_dir)
    iso = Isolation(not args.no_namespaces, args.base_uid, args.slots, runtime_dir)
    iso.use_call_setup(args.call_setup, args.runtime_dir, args.call_setup_lib)
    return runtime_dir, iso, zygote_script


def serve_socket(args: argparse.Namespace) -> None:
    """Bind the socket, set up isolation once, pre-fork one worker per core, wait for them all to exit."""
    runtime_dir, iso, zygote_script = _start(args)
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
                    zygote_script,
                )
                serve_worker(server, listener)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        pids.append(pid)
    listener.close()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: [kill(p, signal.SIGTERM) for p in pids])
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


def serve_stdio(args: argparse.Namespace) -> None:
    """Serve one client over stdin/stdout (e.g. ``docker exec -i`` or an attached container)."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    runtime_dir, iso, zygote_script = _start(args)
    sessions = range(args.slots, args.slots + args.max_sessions)
    server = Server(iso, range(args.slots), args.idle_exit, sessions, args.ready, zygote_script)
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


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="forkserver", description="gym_nemo fork server")
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
