"""The collectors' own cost per episode: a trivial two-step env whose reset and step cost ~nothing.

    PYTHONPATH=TREE python bench/bench_engine.py [--episodes 4000] [--collectors text,token,async]

``text``: ``collect_rollouts`` over 8 sync envs (``SyncVectorEnv``, ``SAME_STEP`` autoreset); ``token``:
``collect_token_rollouts`` over the same with an id-array env and an instant token policy (groups of 2);
``async``: ``collect_token_rollouts_async`` with 8 slots. Prints the process's CPU microseconds per episode
(steadier than wall time on a loaded machine) and episodes/s. Uses only APIs the code before the episode engine
(``36553ad``) also has, so the same file measures both trees: run it with ``PYTHONPATH`` set to each, alternating.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from gym_nemo.policies import Generation
from gym_nemo.rollout import collect_rollouts, collect_token_rollouts, collect_token_rollouts_async

ROW = {"task_id": "t/1", "responses_create_params": {"input": [{"role": "user", "content": "hi"}]}}


class TrivialEnv(gym.Env):
    """Two steps, then reward 1; the final info carries the task row and versions, as a TextEnv's does."""

    def __init__(self, tokens: bool = False) -> None:
        self.tokens, self.turn = tokens, 0
        self.observation_space = gym.spaces.Sequence(gym.spaces.Discrete(100)) if tokens else gym.spaces.Text(100)
        self.action_space = gym.spaces.Text(100)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        self.turn = 0
        observation = np.arange(40, dtype=np.int64) if self.tokens else "prompt"
        return observation, {"task_id": "t/1", "turn": 0, "messages": [{"role": "user", "content": "hi"}]}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        self.turn += 1
        done = self.turn >= 2
        info: dict[str, Any] = {
            "task_id": "t/1",
            "turn": self.turn,
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}],
            "reward_components": {"correct": 1.0},
            "verdict": {"passed": True},
        }
        if done:
            info.update(task_row=ROW, versions={"gym_nemo": "x", "env": "t"})
        observation = np.arange(3, dtype=np.int64) if self.tokens else "observation"
        return observation, float(done), done, False, info


class TextPolicy:
    name = "instant"

    def act(self, observations: list[str], infos: list[dict[str, Any]]) -> list[str]:
        return ["a"] * len(observations)


class TokenPolicy:
    name = "instant"

    def generate(self, prompts: list[list[int]], sampling: Any) -> list[Generation]:
        return [Generation([1, 2, 3, 4], [0.0] * 4, "stop", "") for _ in prompts]


def run(collector: str, episodes: int) -> None:
    tokens = collector != "text"
    vec = SyncVectorEnv([lambda: TrivialEnv(tokens)] * 8, autoreset_mode=AutoresetMode.SAME_STEP)
    if collector == "text":
        collect_rollouts(vec, TextPolicy(), episodes, env_id="t", progress=False)
    elif collector == "token":
        collect_token_rollouts(vec, TokenPolicy(), episodes, env_id="t", group_size=2, progress=False)
    else:
        collect_token_rollouts_async(
            lambda: TrivialEnv(True), TokenPolicy(), episodes, env_id="t", group_size=2, max_in_flight=8, progress=False
        )
    vec.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=4000)
    parser.add_argument("--collectors", default="text,token,async")
    args = parser.parse_args()
    for collector in args.collectors.split(","):
        run(collector, 64)  # warm-up
        start, cpu = time.perf_counter(), time.process_time()
        run(collector, args.episodes)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        print(f"{collector:<6} {1e6 * cpu / args.episodes:7.1f} us CPU/episode  {args.episodes / wall:7.0f} ep/s")


if __name__ == "__main__":
    main()
