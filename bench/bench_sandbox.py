"""Sandbox throughput and latency, each against a baseline measured in the same run.

    python bench/bench_sandbox.py [--calls 2000]    (the docker part needs an engine and the image)

local:  isolated ``print(1)`` calls/s with 2 concurrent clients on the fork-server pool, and p50 latency,
        against launching ``/usr/bin/python3 -I -S -c`` per call (process per call, no isolation at all).
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


def bench_local(calls: int) -> dict:
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"

    def spawn() -> None:
        subprocess.run([python, "-I", "-S", "-c", CODE], capture_output=True, check=True)

    boxes = [LocalSandbox() for _ in range(2)]
    boxes[0].run(CODE)
    per_thread = {}

    def isolated() -> None:
        box = per_thread.setdefault(threading.get_ident(), boxes[len(per_thread) % 2])
        assert box.run(CODE).stdout == "1\n"

    figures = {
        "local_mode": boxes[0].info()["mode"],
        "spawn_calls_per_s": throughput(spawn, calls),
        "local_calls_per_s": throughput(isolated, calls),
        "spawn_p50_ms": p50_ms(spawn, 200),
        "local_p50_ms": p50_ms(lambda: boxes[0].run(CODE), 500),
    }
    figures["local_vs_spawn_throughput"] = figures["local_calls_per_s"] / figures["spawn_calls_per_s"]
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
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", **bench_local(args.calls)}
    figures.update(bench_docker(args.calls))
    if args.json:
        print(json.dumps(figures))
        return
    f = figures
    print(f"machine: {f['machine']}; local sandbox mode: {f['local_mode']}")
    print(
        f"spawn /usr/bin/python3 -I -S -c per call (baseline)  {f['spawn_calls_per_s']:8.0f} calls/s"
        f"  p50 {f['spawn_p50_ms']:.2f} ms"
    )
    print(
        f"local fork-server pool, isolated                     {f['local_calls_per_s']:8.0f} calls/s"
        f"  p50 {f['local_p50_ms']:.2f} ms"
        f"  x{f['local_vs_spawn_throughput']:.2f} baseline"
    )
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
