"""Env overhead and CodeExec throughput, each against a baseline measured in the same run.

    python bench/bench_env.py [--steps 20000] [--episodes 64]

1. Per-step overhead of the TextEnv machinery (parse, tool dispatch, schema validation, transcript,
   info) with a no-op tool, against a bare ``gymnasium.Env`` whose step does nothing.
2. One sandbox run of ``pass`` against a bare ``subprocess.run`` of the same interpreter.
3. CodeExec episodes/s with the embedded default policy (reference solutions, 2 turns, 3 sandbox runs
   per episode counting the verifier) at 1 and 8 async envs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym

import gym_nemo
from gym_nemo.core import Task, TextEnv, Tool, Verdict, input_messages
from gym_nemo.core.spaces import UnicodeText
from gym_nemo.envs.code_exec import CodeExecEnv
from gym_nemo.policies import ReferencePolicy
from gym_nemo.rollout import collect_rollouts
from gym_nemo.sandbox import LocalSandbox


class BareEnv(gym.Env):
    """The baseline: a text env that does nothing."""

    def __init__(self) -> None:
        self.observation_space = self.action_space = UnicodeText(1000)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return "prompt", {}

    def step(self, action):
        return "", 0.0, False, False, {}


class NoopToolEnv(TextEnv):
    """One task, one tool that returns an empty string."""

    @classmethod
    def bundled_rows(cls) -> Sequence[Mapping[str, Any]]:
        return [{"responses_create_params": {"input": "Call noop."}}]

    @classmethod
    def row_to_task(cls, row: Mapping[str, Any], index: int) -> Task:
        return Task("noop", tuple(input_messages(row)), {}, row)

    def make_tools(self) -> Sequence[Tool]:
        return [Tool("noop", "Does nothing.", {"type": "object", "properties": {}}, lambda: "")]

    def verify(self, task: Task, answer: str) -> Verdict:
        return Verdict(0.0, False)


def per_step_us(env: gym.Env, action: str, steps: int, turns_per_episode: int) -> float:
    env.reset(seed=0)
    start = time.perf_counter()
    for i in range(steps):
        if i % turns_per_episode == 0:
            env.reset()
        env.step(action)
    return (time.perf_counter() - start) / steps * 1e6


def median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def episodes_per_s(num_envs: int, episodes: int) -> float:
    envs = gym_nemo.make_vec("nemo/CodeExec-v0", num_envs)
    policy = ReferencePolicy(CodeExecEnv.load_tasks(), corrupt_rate=0.3, seed=0)
    try:
        collect_rollouts(envs, policy, num_envs, env_id="nemo/CodeExec-v0", progress=False)  # warm up workers
        _, summary = collect_rollouts(envs, policy, episodes, env_id="nemo/CodeExec-v0", progress=False)
    finally:
        envs.close()
    return summary.episodes_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()

    action = '<tool_call>{"name": "noop", "arguments": {}}</tool_call>'
    bare = per_step_us(BareEnv(), action, args.steps, 8)
    noop = per_step_us(NoopToolEnv(max_turns=64), action, args.steps, 8)

    sandbox = LocalSandbox()
    raw_ms = median_ms(lambda: subprocess.run([sys.executable, "-I", "-B", "-c", "pass"], check=True), 30)
    sbx_ms = median_ms(lambda: sandbox.run("pass"), 30)

    eps1 = episodes_per_s(1, max(8, args.episodes // 4))
    eps8 = episodes_per_s(8, args.episodes)

    figures = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "bare_env_step_us": round(bare, 2),
        "textenv_noop_tool_step_us": round(noop, 2),
        "textenv_overhead_ratio": round(noop / bare, 1),
        "subprocess_python_pass_ms": round(raw_ms, 2),
        "local_sandbox_pass_ms": round(sbx_ms, 2),
        "sandbox_overhead_ratio": round(sbx_ms / raw_ms, 2),
        "codeexec_episodes_per_s_1_env": round(eps1, 2),
        "codeexec_episodes_per_s_8_envs": round(eps8, 2),
        "codeexec_8_vs_1_ratio": round(eps8 / eps1, 2),
    }
    if args.json:
        print(json.dumps(figures))
        return
    print(f"machine: {figures['machine']}")
    print(f"env step, bare gymnasium.Env (baseline)      {bare:9.2f} us")
    print(f"env step, TextEnv + no-op tool call          {noop:9.2f} us   x{noop / bare:.1f} baseline")
    print(f"subprocess.run(python -c pass) (baseline)    {raw_ms:9.2f} ms")
    print(f"LocalSandbox.run('pass')                     {sbx_ms:9.2f} ms   x{sbx_ms / raw_ms:.2f} baseline")
    print(f"CodeExec episodes/s, 1 env (baseline)        {eps1:9.2f}")
    print(f"CodeExec episodes/s, 8 async envs            {eps8:9.2f}      x{eps8 / eps1:.2f} baseline")


if __name__ == "__main__":
    main()
