"""Lock-step vs async token collectors on nemo/CodeExec-v0, each pair measured in the same run.

    python bench/bench_collectors.py [--envs 1,8,64] [--episodes-per-env 4] [--max-tokens 64]
        [--policies instant,hf,vllm] [--model-size tiny|0.5b] [--against OLD_TREE [--rounds 4]]

For every policy (an instant scripted policy: the envs and TokenEnv alone; the tiny random-init model on
transformers, ``HFPolicy``; the same model on vLLM's engine, ``VLLMPolicy``, when vllm can be imported)
and every env count n: ``collect_token_rollouts`` over ``make_vec(n, "async")`` (lock-step waves, the
baseline) and ``collect_token_rollouts_async`` with n slots, on the same episodes (groups of 2, max 2
attempts, ``max_tokens`` a turn). Envs are built and warmed up before the clock starts (one warm-up run
each), so both collectors time only the episodes. Prints episodes/s, policy tokens/s, the async/lock-step
ratio and the env's share of the wall time (lock-step: env step time / wall; async: a slot's mean share),
then one JSON line. ``--model-size 0.5b`` uses a random model with a real 0.5B chat model's body (see
``gym_nemo.testing.tiny_model``): its tokens cost what a real policy's do, so the env share it reports is the
env's overhead in a real rollout of that size.

torch runs single-threaded here (``OMP_NUM_THREADS=1`` unless set): on this 2-core machine under load, a
2-thread OpenMP ``generate`` called from the main thread (where lock-step calls it) took ~11 s for 64 tokens
against ~0.2 s from a worker thread (where the async collector calls it), which would measure the machine's
thread scheduling instead of the collectors.

``--against OLD_TREE`` compares this tree with another checkout of gym_nemo (e.g. a ``git worktree`` of an older
commit) in one run: this script runs ``--rounds`` times on each tree (``PYTHONPATH``), the trees alternating and
taking turns to go first, and prints each collector's median episodes/s on both, the new/old ratio of the medians,
the rounds' spread, and the collector process's CPU time per episode (steadier than wall time on a loaded machine;
for lock-step it leaves out the env workers, for async it includes the envs, which run in its threads).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported; see the module doc

import gymnasium as gym

import gym_nemo
from gym_nemo.policies import Generation, HFPolicy, SamplingParams, TokenPolicy
from gym_nemo.rollout import collect_token_rollouts, collect_token_rollouts_async
from gym_nemo.testing.tiny_model import build_tiny_model
from gym_nemo.wrappers import TokenEnv

ENV = "nemo/CodeExec-v0"
ENV_KWARGS = {"timeout_s": 10, "max_attempts": 2}


class InstantPolicy:
    """Answers at once with a fixed (wrong) final answer: the env and the wrapper alone."""

    name = "instant"

    def __init__(self, tokenizer: Any) -> None:
        self.ids = [*tokenizer.encode("```python\ndef f():\n    return 1\n```"), tokenizer.eos_token_id]

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Generation]:
        return [Generation(list(self.ids), [0.0] * len(self.ids), "stop", "") for _ in prompts]


def lockstep(policy: TokenPolicy, tokenizer: Any, n: int, episodes: int, sampling: SamplingParams) -> dict[str, float]:
    wrappers = [functools.partial(TokenEnv, tokenizer=tokenizer)]
    envs = gym_nemo.make_vec(ENV, n, "async", wrappers=wrappers, **ENV_KWARGS)
    try:
        collect_token_rollouts(envs, policy, n, env_id=ENV, group_size=min(2, n), sampling=sampling, progress=False)
        start, cpu = time.perf_counter(), time.process_time()
        _, m = collect_token_rollouts(
            envs, policy, episodes, env_id=ENV, group_size=min(2, n), sampling=sampling, progress=False
        )
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        envs.close()
    return figures(episodes, wall, cpu, m)


def asynchronous(
    policy: TokenPolicy, tokenizer: Any, n: int, episodes: int, sampling: SamplingParams
) -> dict[str, float]:
    def make() -> gym.Env:
        return TokenEnv(gym.make(ENV, **ENV_KWARGS), copy.deepcopy(tokenizer))

    def run(count: int, env_fn: Callable[[], gym.Env]) -> dict[str, float]:
        start, cpu = time.perf_counter(), time.process_time()
        _, m = collect_token_rollouts_async(
            env_fn, policy, count, env_id=ENV, group_size=min(2, n), sampling=sampling, max_in_flight=n, progress=False
        )
        return figures(count, time.perf_counter() - start, time.process_time() - cpu, m)

    run(n, make)  # warm-up: first generate, sandbox start
    ready = [make() for _ in range(n)]  # built before the clock, as the lock-step vector env's are
    for env in ready:
        env.reset(seed=0)
    return run(episodes, lambda: ready.pop() if ready else make())


def figures(episodes: int, wall: float, cpu: float, m: Any) -> dict[str, float]:
    """A timed run's figures: episodes/s, policy tokens/s, the env's share of the time, this process's CPU ms
    per episode."""
    return {
        "episodes_per_s": episodes / wall,
        "tokens_per_s": m.policy_tokens / wall,
        "env_share": m.env_time_share,
        "cpu_ms_per_episode": 1000 * cpu / episodes,
    }


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default="1,8,64")
    parser.add_argument("--episodes-per-env", type=int, default=4)
    parser.add_argument("--min-episodes", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--policies", default="instant,hf,vllm")
    parser.add_argument("--model-size", default="tiny", choices=("tiny", "0.5b"))
    parser.add_argument("--against", type=Path, help="another gym_nemo checkout to compare with (see the doc)")
    parser.add_argument("--rounds", type=int, default=4, help="with --against: runs on each tree")
    args = parser.parse_args()
    if args.against is not None:
        forwarded = [
            *("--envs", args.envs, "--episodes-per-env", str(args.episodes_per_env)),
            *("--min-episodes", str(args.min_episodes), "--max-tokens", str(args.max_tokens)),
            *("--policies", args.policies, "--model-size", args.model_size),
        ]
        compare(forwarded, args.against.resolve(), args.rounds)
        return
    sampling = SamplingParams(max_tokens=args.max_tokens, seed=0)
    results: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "load_before": load()}
    results["model_size"] = args.model_size
    print(f"machine: {results['machine']}; model: {args.model_size}; load average before: {results['load_before']}")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(os.path.join(tmp, "model"), size=args.model_size)
        hf = HFPolicy(model_dir)
        policies: dict[str, Callable[[], TokenPolicy]] = {
            "instant": lambda: InstantPolicy(hf.tokenizer),
            "hf": lambda: hf,
        }
        try:
            import vllm  # noqa: F401

            from gym_nemo.policies import VLLMPolicy

            policies["vllm"] = lambda: VLLMPolicy(model_dir, kv_cache_memory_bytes=2 << 30)
        except ImportError as exc:
            print(f"vLLM rows skipped: vllm cannot be imported ({exc})")
        for name in args.policies.split(","):
            if name not in policies:
                continue
            policy = policies[name]()
            for n in (int(x) for x in args.envs.split(",")):
                episodes = max(args.min_episodes, args.episodes_per_env * n) // (2 * n) * 2 * n or 2 * n
                lock = lockstep(policy, hf.tokenizer, n, episodes, sampling)
                free = asynchronous(policy, hf.tokenizer, n, episodes, sampling)
                ratio = free["episodes_per_s"] / lock["episodes_per_s"]
                results[f"{name} x{n}"] = {"episodes": episodes, "lockstep": lock, "async": free, "ratio": ratio}
                print(
                    f"{name:<7} {n:>2} envs, {episodes:>3} episodes: lock-step {lock['episodes_per_s']:7.2f} ep/s "
                    f"{lock['tokens_per_s']:7.0f} tok/s env {lock['env_share']:.3f} | async "
                    f"{free['episodes_per_s']:7.2f} ep/s {free['tokens_per_s']:7.0f} tok/s env {free['env_share']:.3f}"
                    f" | async/lock-step x{ratio:.2f}  (load {load()})",
                    flush=True,
                )
            if hasattr(policy, "close"):
                policy.close()
    results["load_after"] = load()
    print(json.dumps(results))


def compare(args: list[str], old: Path, rounds: int) -> None:
    """Run this script on this tree and on ``old`` in alternating rounds; print medians and new/old ratios."""
    new = Path(__file__).resolve().parents[1]
    runs: dict[Path, list[dict[str, Any]]] = {new: [], old: []}
    print(f"new: {new}\nold: {old}\n{rounds} rounds, alternating; load average before: {load()}")
    for i in range(rounds):
        for tree in (new, old) if i % 2 == 0 else (old, new):
            env = dict(os.environ, PYTHONPATH=str(tree))
            out = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"the run on {tree} failed:\n{out.stderr}")
            runs[tree].append(json.loads(out.stdout.strip().splitlines()[-1]))
            label = "new" if tree == new else "old"
            rows = {k: v for k, v in runs[tree][-1].items() if isinstance(v, dict)}
            figures_ = ", ".join(
                f"{k} lock-step {v['lockstep']['episodes_per_s']:.1f} async {v['async']['episodes_per_s']:.1f}"
                for k, v in rows.items()
            )
            print(f"round {i + 1} {label}: {figures_} ep/s (load {load()})", flush=True)
    summary: dict[str, Any] = {"rounds": rounds, "load_after": load()}
    for key in (k for k, v in runs[new][0].items() if isinstance(v, dict)):
        for collector in ("lockstep", "async"):
            for figure, unit in (("episodes_per_s", "ep/s"), ("cpu_ms_per_episode", "CPU ms/ep")):
                new_values = [r[key][collector][figure] for r in runs[new]]
                old_values = [r[key][collector][figure] for r in runs[old]]
                ratio = statistics.median(new_values) / statistics.median(old_values)
                summary[f"{key} {collector} {figure}"] = {"new": new_values, "old": old_values, "ratio": ratio}
                print(
                    f"{key} {collector:<8} {unit:<10} median new {statistics.median(new_values):8.2f} "
                    f"[{min(new_values):.2f}-{max(new_values):.2f}]  old {statistics.median(old_values):8.2f} "
                    f"[{min(old_values):.2f}-{max(old_values):.2f}]  new/old x{ratio:.3f}"
                )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
