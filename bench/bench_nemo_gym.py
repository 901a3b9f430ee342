"""NeMo Gym's real servers behind the env contract: what the adapter costs, and one shared server under load.

1. Math: an episode (reset + final answer) through NeMo Gym's math_with_judge server (nemo-gym/math_with_judge-v0)
   vs our native nemo/Math-v0 on the same rows and answers (the server's shipped rollouts).
2. A tool call through the adapter (env.step with a <tool_call>: parse, validate, POST in the episode's session,
   append the result) vs the same POST sent directly with httpx; the difference at p50 is the adapter's cost
   per HTTP round trip (target: <= 2 ms).
3. 64 concurrent episodes (threads, each with its own env) against one shared example_single_tool_call server:
   every episode must finish verified (none lost); episodes/s, against 1 episode at a time in the same run.

Usage: python bench/bench_nemo_gym.py [--rounds N] [--episodes-per-worker N]   (needs `gym-nemo nemo-gym setup offline`)
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any

import gymnasium as gym
import httpx

import gym_nemo  # noqa: F401  (registers the ids)
from gym_nemo.core.task import read_jsonl
from gym_nemo.nemo_gym.runtime import server_dir
from gym_nemo.nemo_gym.server import nodelay_transport
from gym_nemo.testing.nemo_gym_coverage import WEATHER_ROW, recorded_actions, rollout_rows, task_row

CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "SF"}}</tool_call>'


def _ms(samples: list[float]) -> str:
    q = statistics.quantiles(samples, n=10)
    return f"p50 {statistics.median(samples) * 1e3:7.2f} ms  p90 {q[8] * 1e3:7.2f} ms"


def bench_math(rounds: int) -> None:
    examples = read_jsonl(server_dir("math_with_judge") / "data" / "example.jsonl")
    plays = [
        (task_row(r, examples), recorded_actions(r["response"])[-1], r["reward"])
        for r in rollout_rows("math_with_judge")
    ]
    rows = [row for row, _, _ in plays]
    envs = {
        "NeMo Gym math_with_judge server": gym.make("nemo-gym/math_with_judge-v0", data=rows),
        "native nemo/Math-v0": gym.make("nemo/Math-v0", data=rows),
    }
    times: dict[str, list[float]] = {k: [] for k in envs}
    rewards: dict[str, list[float]] = {k: [] for k in envs}
    for _ in range(rounds):
        for name, env in envs.items():  # alternate, so load on the machine hits both alike
            for index, (_, answer, _) in enumerate(plays):
                start = time.perf_counter()
                env.reset(options={"task_index": index})
                _, reward, *_ = env.step(answer)
                times[name].append(time.perf_counter() - start)
                rewards[name].append(reward)
    base = statistics.median(times["native nemo/Math-v0"])
    print(f"\n1. Math episode, {len(plays)} rows x {rounds} rounds (stored rewards {[p[2] for p in plays]})")
    for name in envs:
        ratio = statistics.median(times[name]) / base
        print(f"   {name:<34} {_ms(times[name])}  x{ratio:.2f} native  rewards {rewards[name][: len(plays)]}")
    for env in envs.values():
        env.close()


def bench_tool_call(rounds: int) -> None:
    env = gym.make("nemo-gym/example_single_tool_call-v0", max_turns=10_000, max_episode_steps=10_000)
    client = env.unwrapped.client
    env.reset(options={"task": WEATHER_ROW})
    # the same session, the same kind of connection (TCP_NODELAY, as the adapter's)
    direct = httpx.Client(cookies=client._http().cookies, transport=nodelay_transport())
    url = f"{client.base_url}/get_weather"
    adapter, raw = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        env.step(CALL)
        adapter.append(time.perf_counter() - start)
        start = time.perf_counter()
        reply = direct.post(url, json={"city": "SF"})
        reply.text  # noqa: B018 - read the body, as the adapter does
        raw.append(time.perf_counter() - start)
        if len(env.unwrapped._messages) > 200:  # keep the transcript short: a new episode now and then
            env.reset(options={"task": WEATHER_ROW})
    overhead = (statistics.median(adapter) - statistics.median(raw)) * 1e3
    print(f"\n2. One tool call, {rounds} alternating rounds")
    print(f"   through the adapter (env.step)     {_ms(adapter)}")
    print(f"   direct httpx POST                  {_ms(raw)}")
    print(f"   adapter overhead at p50: {overhead:.2f} ms per round trip (target <= 2 ms)")
    direct.close()
    env.close()


def _episodes(env: Any, count: int, done: list[int], lost: list[str]) -> None:
    for _ in range(count):
        env.reset(options={"task": WEATHER_ROW})
        env.step(CALL)
        _, reward, terminated, _, info = env.step("It is cold in SF.")
        if terminated and reward == 1.0:
            done.append(1)
        else:
            lost.append(str(info.get("infra_error") or info.get("verdict")))


def bench_concurrency(workers: int, per_worker: int) -> None:
    results = {}
    for n in (1, workers):
        envs = [gym.make("nemo-gym/example_single_tool_call-v0") for _ in range(n)]
        done: list[int] = []
        lost: list[str] = []
        count = per_worker if n > 1 else max(per_worker * 4, 16)
        threads = [threading.Thread(target=_episodes, args=(e, count, done, lost)) for e in envs]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        results[n] = len(done) / elapsed
        print(
            f"   {n:>3} concurrent: {len(done)}/{n * count} episodes verified, {len(lost)} lost, "
            f"{results[n]:6.1f} episodes/s ({3 * len(done) / elapsed:6.1f} requests/s)"
        )
        if lost:
            print(f"       first loss: {lost[0][:200]}")
        for e in envs:
            e.close()
    print(f"   throughput x{results[workers] / results[1]:.2f} of one episode at a time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200, help="tool-call rounds (math: rounds // 40)")
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--episodes-per-worker", type=int, default=4)
    args = parser.parse_args()
    bench_math(max(1, args.rounds // 40))
    bench_tool_call(args.rounds)
    print(f"\n3. {args.workers} concurrent episodes against one shared server (tool call + /verify each)")
    bench_concurrency(args.workers, args.episodes_per_worker)


if __name__ == "__main__":
    main()
