"""Token-level rollout costs, each against a baseline measured in the same run.

    python bench/bench_token_rollout.py [--episodes 32] [--envs 1,8] [--max-tokens 64]

1. ``TokenEnv.step`` (decode the action, render the chat template, tokenize the delta) against the wrapped
   text env's own step, over 4-turn episodes of a no-op tool env.
2. Lock-step ``collect_token_rollouts`` on nemo/CodeExec-v0 (groups of 2): an instant scripted policy
   (the env and wrapper alone) and the tiny random-init HF model (``gym_nemo.testing.tiny_model``),
   at each number of async envs: episodes/s, policy tokens/s and the env's share of the wall time.
Needs the ``[hf]`` extra. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gym_nemo
from gym_nemo.core import Task, TextEnv, Tool, Verdict, input_messages
from gym_nemo.policies import Generation, HFPolicy, SamplingParams
from gym_nemo.rollout import collect_token_rollouts
from gym_nemo.testing.tiny_model import build_tiny_model
from gym_nemo.wrappers import TokenEnv


class NoopToolEnv(TextEnv):
    """One task, one no-op tool; episodes last until the turn limit."""

    default_max_turns = 4

    @classmethod
    def bundled_rows(cls) -> Sequence[Mapping[str, Any]]:
        return [{"responses_create_params": {"input": "Call the tool."}, "task_id": "t0"}]

    @classmethod
    def row_to_task(cls, row: Mapping[str, Any], index: int) -> Task:
        return Task(task_id=row["task_id"], messages=tuple(input_messages(row)), row=row)

    def make_tools(self) -> Sequence[Tool]:
        return [Tool("noop", "Does nothing.", {"type": "object", "properties": {}}, lambda: "ok")]

    def verify(self, task: Task, answer: str) -> Verdict:
        return Verdict(reward=0.0, passed=False)


CALL = '<tool_call>\n{"name": "noop", "arguments": {}}\n</tool_call>'


def bench_wrapper(tokenizer: Any, episodes: int) -> dict[str, float]:
    text_env = NoopToolEnv()
    start = time.perf_counter()
    steps = 0
    for e in range(episodes):
        text_env.reset(seed=e)
        done = False
        while not done:
            *_, terminated, truncated, _ = text_env.step(CALL)
            done, steps = terminated or truncated, steps + 1
    text_us = (time.perf_counter() - start) / steps * 1e6
    env = TokenEnv(NoopToolEnv(), tokenizer)
    action = [*tokenizer.encode(CALL), tokenizer.eos_token_id]
    start = time.perf_counter()
    steps = 0
    for e in range(episodes):
        env.reset(seed=e)
        done = False
        while not done:
            *_, terminated, truncated, _ = env.step(action)
            done, steps = terminated or truncated, steps + 1
    token_us = (time.perf_counter() - start) / steps * 1e6
    return {"text_step_us": text_us, "token_step_us": token_us}


class InstantPolicy:
    """Answers at once with a fixed final message: the env and wrapper alone."""

    name = "instant"

    def __init__(self, tokenizer: Any) -> None:
        self.ids = [*tokenizer.encode("```python\ndef f():\n    return 1\n```"), tokenizer.eos_token_id]

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Generation]:
        return [Generation(list(self.ids), [0.0] * len(self.ids), "stop", "") for _ in prompts]


def bench_rollouts(policy: Any, tokenizer: Any, num_envs: int, episodes: int, max_tokens: int) -> dict[str, float]:
    wrappers = [functools.partial(TokenEnv, tokenizer=tokenizer)]
    envs = gym_nemo.make_vec("nemo/CodeExec-v0", num_envs, "async", wrappers=wrappers, timeout_s=10)
    try:
        collect_token_rollouts(  # warm-up: worker start, sandbox pool, first generate
            envs, policy, num_envs, env_id="nemo/CodeExec-v0", group_size=min(2, num_envs), progress=False
        )
        start = time.perf_counter()
        _, m = collect_token_rollouts(
            envs,
            policy,
            episodes,
            env_id="nemo/CodeExec-v0",
            group_size=min(2, num_envs),
            sampling=SamplingParams(max_tokens=max_tokens, seed=0),
            progress=False,
        )
        wall = time.perf_counter() - start
    finally:
        envs.close()
    return {"episodes_per_s": episodes / wall, "tokens_per_s": m.policy_tokens / wall, "env_share": m.env_time_share}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--envs", default="1,8")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(os.path.join(tmp, "tiny"))
        hf = HFPolicy(model_dir)
        results: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores"}
        results["wrapper"] = bench_wrapper(hf.tokenizer, 50)
        w = results["wrapper"]
        print(f"machine: {results['machine']}")
        print(f"text env step, no-op tool (baseline)      {w['text_step_us']:9.1f} us")
        print(
            f"TokenEnv step (decode, render, tokenize)  {w['token_step_us']:9.1f} us"
            f"  x{w['token_step_us'] / w['text_step_us']:.1f}"
        )
        for n in (int(x) for x in args.envs.split(",")):
            episodes = max(args.episodes, n) // n * n
            for name, policy in (("instant policy", InstantPolicy(hf.tokenizer)), ("tiny HF model", hf)):
                r = bench_rollouts(policy, hf.tokenizer, n, episodes, args.max_tokens)
                results[f"{name} x{n}"] = r
                print(
                    f"CodeExec, {name:<14} {n:>2} envs: {r['episodes_per_s']:7.2f} episodes/s "
                    f"{r['tokens_per_s']:8.0f} policy tokens/s  env share {r['env_share']:.3f}"
                )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
