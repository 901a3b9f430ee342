"""``gym-nemo serve`` under load: thousands of concurrent sessions of nemo/Math-v0 on one server (loopback).

Starts a server process, opens ``--sessions`` sessions and keeps all of them open while every session plays
``--rounds`` episodes (reset, then a final answer that is verified by math-verify), with at most
``--concurrency`` requests in flight (aiohttp client; 503s are retried after their Retry-After). Reports
requests/s over the whole run and p50/p99 latency of steps and resets as the client sees them, then the
same resets and steps in process (one env, one thread) as the baseline, measured in the same run.

    python bench/bench_serve.py [--sessions 2000] [--rounds 3] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import gymnasium as gym

import gym_nemo  # noqa: F401  (registers the envs)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.serving import start_server

ENV_ID = "nemo/Math-v0"


def action(session: int, round_: int) -> str:
    """A short reasoning and a boxed number (mostly wrong answers: math-verify still parses and compares)."""
    return f"Adding the terms step by step gives the total.\n\nThe answer is \\boxed{{{(session * 7 + round_) % 97}}}"


def uptime() -> str:
    """The load average (the machine is shared: the figures depend on it)."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def drive(url: str, sessions: int, rounds: int, concurrency: int) -> dict[str, object]:
    latencies: dict[str, list[float]] = {"create": [], "reset": [], "step": [], "close": []}
    counts = {"requests": 0, "busy_503": 0, "errors": 0}
    gate = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as http:

        async def call(kind: str, method: str, path: str, body: dict | None = None) -> dict:
            while True:
                async with gate:
                    tick = time.perf_counter()
                    async with http.request(method, path, json=body) as response:
                        reply = await response.json()
                        status = response.status
                    counts["requests"] += 1
                if status == 503:
                    counts["busy_503"] += 1
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                    continue
                if status != 200:
                    counts["errors"] += 1
                    raise RuntimeError(f"{method} {path}: {status} {reply}")
                latencies[kind].append(time.perf_counter() - tick)
                return reply

        tick = time.perf_counter()
        ids = [
            r["session_id"]
            for r in await asyncio.gather(*(call("create", "POST", "/sessions", {}) for _ in range(sessions)))
        ]
        opened_s = time.perf_counter() - tick
        async with http.get("/metrics") as response:
            open_sessions = (await response.json())["sessions"]

        async def play(index: int, sid: str) -> int:
            finished = 0
            for round_ in range(rounds):
                await call("reset", "POST", f"/sessions/{sid}/reset", {"seed": index * rounds + round_})
                reply = await call("step", "POST", f"/sessions/{sid}/step", {"action": action(index, round_)})
                finished += bool(reply["terminated"] or reply["truncated"])
            return finished

        tick = time.perf_counter()
        requests_before = counts["requests"]
        finished = await asyncio.gather(*(play(i, sid) for i, sid in enumerate(ids)))
        play_s = time.perf_counter() - tick
        play_requests = counts["requests"] - requests_before
        await asyncio.gather(*(call("close", "DELETE", f"/sessions/{sid}") for sid in ids))
        async with http.get("/metrics") as response:
            metrics = await response.json()
    return {
        "latencies": latencies,
        "counts": counts,
        "opened_s": opened_s,
        "open_sessions": open_sessions,
        "episodes": sum(finished),
        "play_s": play_s,
        "play_requests": play_requests,
        "server": metrics,
    }


def in_process_baseline(episodes: int) -> dict[str, float]:
    env = gym.make(ENV_ID)
    env.reset(seed=0)
    env.step(action(0, 0))  # starts the verifier worker
    resets: list[float] = []
    steps: list[float] = []
    for i in range(episodes):
        tick = time.perf_counter()
        env.reset(seed=i)
        resets.append(time.perf_counter() - tick)
        tick = time.perf_counter()
        env.step(action(i, 0))
        steps.append(time.perf_counter() - tick)
    env.close()
    total = sum(resets) + sum(steps)
    return {
        "calls_per_s": 2 * episodes / total,
        "step_p50": percentile(steps, 0.5),
        "step_p99": percentile(steps, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--baseline-episodes", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=0, help="the server's env-call threads (0: its default)")
    args = parser.parse_args()

    print(f"machine: {os.cpu_count()} cores; uptime: {uptime()}")
    server = start_server(ENV_ID, "--max-sessions", str(max(10_000, args.sessions)), "--workers", str(args.workers))
    try:
        result = asyncio.run(drive(server.url, args.sessions, args.rounds, args.concurrency))
    finally:
        server.stop()
    baseline = in_process_baseline(args.baseline_episodes)
    lat = result["latencies"]
    rps = result["play_requests"] / result["play_s"]
    print(f"uptime after: {uptime()}")
    print(f"{args.sessions} sessions opened in {result['opened_s']:.1f} s; open at once: {result['open_sessions']}")
    print(
        f"episodes finished {result['episodes']} / {args.sessions * args.rounds}; "
        f"errors {result['counts']['errors']}; 503s retried {result['counts']['busy_503']}"
    )
    print("| what | figure |")
    print("|---|---|")
    print(f"| in process, 1 env, 1 thread: reset + step calls/s (baseline) | {baseline['calls_per_s']:.0f} |")
    print(f"| in process: step p50 / p99 | {baseline['step_p50'] * 1e3:.1f} / {baseline['step_p99'] * 1e3:.1f} ms |")
    print(
        f"| served, {args.sessions} sessions, {args.concurrency} requests in flight: requests/s (reset + step) "
        f"| {rps:.0f} (x{rps / baseline['calls_per_s']:.2f} of in process) |"
    )
    print(
        f"| served: step p50 / p99 (client side) | {statistics.median(lat['step']) * 1e3:.1f} / "
        f"{percentile(lat['step'], 0.99) * 1e3:.1f} ms |"
    )
    print(
        f"| served: reset p50 / p99 | {statistics.median(lat['reset']) * 1e3:.1f} / "
        f"{percentile(lat['reset'], 0.99) * 1e3:.1f} ms |"
    )
    server_p50 = result["server"]["step_latency_p50_s"] or 0.0
    server_p99 = result["server"]["step_latency_p99_s"] or 0.0
    print(f"| server side: env.step p50 / p99 | {server_p50 * 1e3:.1f} / {server_p99 * 1e3:.1f} ms |")


if __name__ == "__main__":
    main()
