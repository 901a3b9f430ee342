"""Sandbox throughput and latency, each against a baseline measured in the same run.

    python bench/bench_sandbox.py [--calls 4000] [--rounds 5]   (the docker part needs an engine and the image)
    python bench/bench_sandbox.py --against OLD_TREE [--calls 1200] [--rounds 6]

local:  isolated ``print(1)`` calls/s on the fork-server pool with 2 concurrent clients and with 4 (enough
        to keep both cores busy: the throughput), and p50 latency, against launching ``/usr/bin/python3 -I -S
        -c`` per call (process per call, no isolation at all), measured the same two ways, in alternating
        rounds (the median round of each side); at 4 clients also the same pool with its call setup in Python
        (``LocalSandbox(call_setup="python")``, what runs where no C compiler is found).
docker: warm-pool call p50 against ``exec_run`` into a warm container of the same image.

``--against OLD_TREE`` (another checkout of gym_nemo, e.g. a ``git worktree`` of an older commit) compares
this tree's fork server with that tree's instead, side by side: it starts each tree's daemon the way that
tree's ``LocalSandbox`` does (the code ``local.FORKSERVER`` names there, found with ``PYTHONPATH=TREE``), on
private sockets, for both call-setup paths (C, and ``--call-setup python``). Then, in alternating rounds
(the trees taking turns to go first), ``--calls`` ``print(1)`` calls from 4 concurrent clients go to each
daemon. Per side it prints calls/s (median round and range), and from ``/proc`` the daemon's process
tree's CPU ms and minor page faults per call (every live process in the tree plus the children it reaped:
the call processes end up in their zygote's ``cutime``/``cminflt``), with new/old ratios; and the minor
faults a call process has taken by the time the user's code runs (read by that code from
``/proc/self/stat``: steady for one zygote, varying by a few faults from one zygote start to the next).
The daemons are stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

from gym_nemo.sandbox import LocalSandbox
from gym_nemo.sandbox.base import Limits
from gym_nemo.sandbox.client import ForkServerBackend, ForkServerClient
from gym_nemo.sandbox.local import sandbox_interpreter

CODE = "print(1)"


def throughput(call, calls: int, threads: int = 2) -> float:
    def work() -> None:
        for _ in range(calls // threads):
            call()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return calls / (time.perf_counter() - start)


def p50_ms(call, n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def bench_local(calls: int, rounds: int) -> dict:
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"

    def spawn() -> None:
        subprocess.run([python, "-I", "-S", "-c", CODE], capture_output=True, check=True)

    box = LocalSandbox()
    box.run(CODE)
    LocalSandbox(call_setup="python").run(CODE)
    per_thread = threading.local()  # one client (connection) per thread and kind

    def isolated(call_setup: str = "auto") -> None:
        if not hasattr(per_thread, call_setup):
            setattr(per_thread, call_setup, LocalSandbox(call_setup=call_setup))
        assert getattr(per_thread, call_setup).run(CODE).stdout == "1\n"

    info = box.info()
    figures = {"local_mode": info["mode"], "local_call_setup": info.get("call_setup", "python")}
    for clients in (2, 4):
        # Short rounds, alternating, so that drift of the machine (other tenants, the host) hits both
        # sides alike; each side's figure is its median round.
        spawn_rounds, local_rounds, python_rounds = [], [], []
        for _ in range(rounds):
            spawn_rounds.append(throughput(spawn, calls // (2 * rounds), clients))
            local_rounds.append(throughput(isolated, calls // rounds, clients))
            if clients == 4:  # the fork server's Python path (no C compiler), for comparison
                python_rounds.append(throughput(lambda: isolated("python"), calls // rounds, clients))
        figures[f"spawn_calls_per_s_{clients}"] = statistics.median(spawn_rounds)
        figures[f"local_calls_per_s_{clients}"] = statistics.median(local_rounds)
        ratio = figures[f"local_calls_per_s_{clients}"] / figures[f"spawn_calls_per_s_{clients}"]
        figures[f"local_vs_spawn_{clients}"] = ratio
    figures["local_python_setup_calls_per_s_4"] = statistics.median(python_rounds)
    figures["local_vs_python_setup_4"] = figures["local_calls_per_s_4"] / figures["local_python_setup_calls_per_s_4"]
    figures["spawn_p50_ms"] = p50_ms(spawn, 200)
    figures["local_p50_ms"] = p50_ms(lambda: box.run(CODE), 500)
    return figures


def bench_docker(calls: int) -> dict:
    from gym_nemo.sandbox.docker import DockerSandbox, docker_unavailable_reason

    reason = docker_unavailable_reason()
    if reason:
        return {"docker_skipped": reason}
    box = DockerSandbox(pool_size=1)
    box.run(CODE)
    container = box.docker.containers.list(filters={"label": f"org.gym_nemo.pool={box.key}"})[0]

    def exec_run() -> None:
        assert container.exec_run(["python3", "-I", "-S", "-c", CODE]).output == b"1\n"

    figures = {
        "docker_exec_run_p50_ms": p50_ms(exec_run, 50),
        "docker_pool_p50_ms": p50_ms(lambda: box.run(CODE), 500),
        "docker_pool_calls_per_s": throughput(lambda: box.run(CODE), calls),
    }
    figures["docker_pool_vs_exec_run"] = figures["docker_exec_run_p50_ms"] / figures["docker_pool_p50_ms"]
    box.remove_pool()
    return figures


# -- --against: this tree's fork server side by side with another tree's

AB_CLIENTS = 4
CALL_FAULTS_CODE = "print(open('/proc/self/stat').read().rsplit(')', 1)[1].split()[7])"  # minflt so far


class SocketSandbox(ForkServerBackend):
    """The ``Sandbox`` protocol over one connection to a daemon's socket (one client)."""

    def __init__(self, path: str) -> None:
        self.limits = Limits()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        self.client = ForkServerClient(sock)

    def _request(self, req: dict, timeout_s: float = 0, route: object = None) -> dict:
        return self.client.request(req)


def forkserver_entry(tree: str) -> str:
    """What ``tree``'s ``LocalSandbox`` runs as the daemon (a package dir, or the old one-file script)."""
    code = "from gym_nemo.sandbox import local; print(local.FORKSERVER)"
    env = {**os.environ, "PYTHONPATH": tree}
    # cwd: ``python -c`` puts the current directory ahead of PYTHONPATH
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tree, capture_output=True, text=True, check=True)
    entry = out.stdout.strip()
    if not entry.startswith(os.path.join(tree, "")):
        raise RuntimeError(f"{tree}: its gym_nemo is not the one imported with PYTHONPATH={tree} ({entry})")
    return entry


class Daemon:
    """One tree's fork-server daemon on a private socket, started with the arguments ``LocalSandbox`` uses."""

    def __init__(self, tree: str, call_setup: str, workdir: str, name: str) -> None:
        sock = os.path.join(workdir, f"fs-{name}.sock")
        argv = [sandbox_interpreter(), "-I", "-S", forkserver_entry(tree), "--socket", sock]
        argv += ["--runtime-dir", workdir, "--slots", str(max(2, os.cpu_count() or 2)), "--call-setup", call_setup]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            start_new_session=True,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )
        try:
            ready = json.loads(self.proc.stdout.readline() or "{}")  # type: ignore[union-attr]
            if ready.get("call_setup") != ("c" if call_setup == "auto" else "python"):
                raise RuntimeError(f"{tree}: the daemon did not start with call setup {call_setup}: {ready}")
            self.clients = [SocketSandbox(sock) for _ in range(AB_CLIENTS)]
        except BaseException:
            self.stop()
            raise

    def usage(self) -> tuple[float, int]:
        """CPU seconds and minor page faults of the daemon's process tree so far, reaped children included."""
        return tree_usage(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def tree_usage(root: int) -> tuple[float, int]:
    """Sum over ``root`` and its live descendants of utime+stime+cutime+cstime (s) and minflt+cminflt: each
    process's own and that of the children it has reaped, so a call process counts once, alive or reaped."""
    children: dict[int, list[int]] = {}
    usage: dict[int, tuple[int, int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        ppid, minflt, cminflt, ticks = int(fields[1]), int(fields[7]), int(fields[8]), fields[11:15]
        children.setdefault(ppid, []).append(int(name))
        usage[int(name)] = (sum(map(int, ticks)), minflt + cminflt)
    total_ticks = total_faults = 0
    todo = [root]
    while todo:
        pid = todo.pop()
        ticks, faults = usage.get(pid, (0, 0))
        total_ticks, total_faults = total_ticks + ticks, total_faults + faults
        todo += children.get(pid, [])
    return total_ticks / os.sysconf("SC_CLK_TCK"), total_faults


def ab_round(daemon: Daemon, calls: int) -> dict[str, float]:
    """``calls`` ``print(1)`` calls from the daemon's clients at once: calls/s, server CPU ms and faults per call."""

    def work(box: SocketSandbox) -> None:
        for _ in range(calls // AB_CLIENTS):
            assert box.run(CODE).stdout == "1\n"

    threads = [threading.Thread(target=work, args=(box,)) for box in daemon.clients]
    cpu, faults = daemon.usage()
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    cpu_after, faults_after = daemon.usage()
    n = calls // AB_CLIENTS * AB_CLIENTS
    return {"calls_per_s": n / wall, "cpu_ms": 1e3 * (cpu_after - cpu) / n, "faults": (faults_after - faults) / n}


def call_faults(daemon: Daemon, calls_per_client: int = 5) -> float:
    """The median minor faults a call process has taken when the user's code reads them (over every client:
    clients of different workers get call processes of different zygotes)."""
    return statistics.median(
        int(box.run(CALL_FAULTS_CODE).stdout) for box in daemon.clients for _ in range(calls_per_client)
    )


@contextlib.contextmanager
def daemons(trees: dict[str, str], call_setup: str) -> Iterator[dict[str, Daemon]]:
    """Each tree's daemon (one call-setup path), warmed up; stopped on the way out."""
    started: dict[str, Daemon] = {}
    with tempfile.TemporaryDirectory(prefix="bench_sandbox_") as workdir:
        try:
            for side, tree in trees.items():
                started[side] = Daemon(tree, call_setup, workdir, side)
                ab_round(started[side], 4 * AB_CLIENTS)
            yield started
        finally:
            for daemon in started.values():
                daemon.stop()


def bench_against(old_tree: str, calls: int, rounds: int) -> dict:
    """Rounds alternating between the trees (each going first in turn), for both call-setup paths."""
    trees = {"old": os.path.abspath(old_tree), "new": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    figures: dict = {"trees": trees}
    for path, call_setup in (("c", "auto"), ("python", "python")):
        with daemons(trees, call_setup) as sides:
            results: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
            for r in range(rounds):
                for side in sorted(sides, reverse=r % 2 == 1):  # "new" first, then "old" first
                    results[side].append(ab_round(sides[side], calls))
            for side, daemon in sides.items():
                per_round = {key: [res[key] for res in results[side]] for key in results[side][0]}
                figures[f"{path}_{side}"] = {
                    **{key: statistics.median(values) for key, values in per_round.items()},
                    "calls_per_s_range": (min(per_round["calls_per_s"]), max(per_round["calls_per_s"])),
                    "call_process_faults": call_faults(daemon),
                }
    return figures


def print_against(figures: dict) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    trees = figures["trees"]
    print(f"old: {trees['old']}  new: {trees['new']}  ({AB_CLIENTS} clients, print(1)); load {load}")
    rows = (
        ("calls/s (median round)", "calls_per_s", "{:.0f}"),
        ("server tree CPU ms per call", "cpu_ms", "{:.2f}"),
        ("minor faults per call, tree", "faults", "{:.0f}"),
        ("minor faults in a call process", "call_process_faults", "{:.0f}"),
    )
    for path in ("c", "python"):
        old, new = figures[f"{path}_old"], figures[f"{path}_new"]
        print(f"call setup in {'C' if path == 'c' else 'Python'}:")
        for label, key, fmt in rows:
            ratio = new[key] / old[key]
            print(f"  {label:32} old {fmt.format(old[key]):>7}  new {fmt.format(new[key]):>7}  new/old x{ratio:.3f}")
        for side, f in (("old", old), ("new", new)):
            low, high = f["calls_per_s_range"]
            print(f"  calls/s range, {side}: {low:.0f}-{high:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--calls", type=int, help="calls per client count (spawns: half), default 4000; --against: 1200 a round"
    )
    parser.add_argument("--rounds", type=int, help="alternating rounds per client count, default 5; --against: 6")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--against", metavar="OLD_TREE", help="compare this tree's fork server with that tree's")
    args = parser.parse_args()
    if args.against:
        figures = bench_against(args.against, args.calls or 1200, args.rounds or 6)
        if args.json:
            print(json.dumps(figures))
        else:
            print_against(figures)
        return
    args.calls, args.rounds = args.calls or 4000, args.rounds or 5
    figures = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", **bench_local(args.calls, args.rounds)}
    figures.update(bench_docker(args.calls))
    if args.json:
        print(json.dumps(figures))
        return
    f = figures
    print(f"machine: {f['machine']}; local sandbox mode: {f['local_mode']}, call setup in {f['local_call_setup']}")
    for clients in (2, 4):
        print(
            f"{clients} clients: spawn /usr/bin/python3 -I -S -c per call (baseline) "
            f"{f[f'spawn_calls_per_s_{clients}']:6.0f} calls/s; local fork-server pool, isolated "
            f"{f[f'local_calls_per_s_{clients}']:6.0f} calls/s: x{f[f'local_vs_spawn_{clients}']:.2f} baseline"
        )
    print(
        f"4 clients: the same pool with the call setup in Python (no C compiler) "
        f"{f['local_python_setup_calls_per_s_4']:6.0f} calls/s: the C path x{f['local_vs_python_setup_4']:.2f} that"
    )
    print(f"p50 latency: spawn {f['spawn_p50_ms']:.2f} ms; local pool {f['local_p50_ms']:.2f} ms")
    if "docker_skipped" in f:
        print(f"docker: skipped ({f['docker_skipped']})")
        return
    print(f"docker exec_run into a warm container (baseline)     p50 {f['docker_exec_run_p50_ms']:.2f} ms")
    print(
        f"docker warm pool (fork server in the container)      p50 {f['docker_pool_p50_ms']:.2f} ms"
        f"  x{f['docker_pool_vs_exec_run']:.1f} faster; {f['docker_pool_calls_per_s']:.0f} calls/s"
    )


if __name__ == "__main__":
    main()
