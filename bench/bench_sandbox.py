"""Sandbox throughput and latency, each against a baseline measured in the same run.

    python bench/bench_sandbox.py [--calls 4000] [--rounds 5]   (the docker part needs an engine and the image)

local:  isolated ``print(1)`` calls/s on the fork-server pool with 2 concurrent clients and with 4 (enough
        to keep both cores busy: the throughput), and p50 latency, against launching ``/usr/bin/python3 -I -S
        -c`` per call (process per call, no isolation at all), measured the same two ways, in alternating
        rounds (the median round of each side); at 4 clients also the same pool with its call setup in Python
        (``LocalSandbox(call_setup="python")``, what runs where no C compiler is found).
docker: warm-pool call p50 against ``exec_run`` into a warm container of the same image.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import threading
import time

from gym_nemo.sandbox import LocalSandbox

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=4000, help="isolated calls per client count (spawns: half)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating spawn/local rounds per client count")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
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
