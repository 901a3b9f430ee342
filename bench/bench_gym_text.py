"""The text layer's cost per step: ``nemo/GymText-v0`` over FrozenLake against the bare Gymnasium env, and
episodes/s of a text game against the bare TextArena game, each pair measured in the same run.

    python bench/bench_gym_text.py [--steps 20000] [--episodes 300] [--rounds 3]

World steps: the same seeded random action sequence on ``FrozenLake-v1`` (4x4, slippery) through
``gym.make("FrozenLake-v1")`` (the baseline: an int action, an int observation) and through
``gym.make("nemo/GymText-v0", env_id="FrozenLake-v1")`` (the action as ``<action>down</action>`` text, parsed;
the state described as text; the chat transcript, reward contract and info of every step). Text game: Tower of
Hanoi solved by its reference moves (7 moves an episode) through ``nemo/TextArena-TowerOfHanoi-v0`` and through
TextArena's own raw env with the same moves. Baseline and text env alternate in ``--rounds`` rounds; the median
round of each is reported with the ratio (text / bare time per step = the text layer's cost factor), then one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np

import gym_nemo  # noqa: F401  (registers the ids)

NAMES = ("left", "down", "right", "up")


def bare_lake(steps: int, actions: np.ndarray) -> float:
    env = gym.make("FrozenLake-v1")
    env.reset(seed=0)
    start = time.perf_counter()
    for i in range(steps):
        _, _, terminated, truncated, _ = env.step(int(actions[i]))
        if terminated or truncated:
            env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return elapsed


def text_lake(steps: int, actions: np.ndarray) -> float:
    env = gym.make("nemo/GymText-v0", env_id="FrozenLake-v1")
    env.reset(seed=0)
    messages = [f"<action>{NAMES[int(a)]}</action>" for a in actions[:steps]]
    start = time.perf_counter()
    for message in messages:
        _, _, terminated, truncated, _ = env.step(message)
        if terminated or truncated:
            env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return elapsed


def bare_hanoi(episodes: int, moves: list[str]) -> float:
    import textarena

    game = textarena.make("TowerOfHanoi-v0-raw")
    start = time.perf_counter()
    for seed in range(episodes):
        game.reset(num_players=1, seed=seed)
        game.get_observation()
        for move in moves:
            done, _ = game.step(move)
            game.get_observation()
            if done:
                break
        game.close()
    return time.perf_counter() - start


def text_hanoi(episodes: int, moves: list[str]) -> float:
    env = gym.make("nemo/TextArena-TowerOfHanoi-v0", num_tasks=episodes)
    env.reset(seed=0)  # builds the pool and imports before the clock starts
    start = time.perf_counter()
    for index in range(episodes):
        env.reset(options={"task_index": index})
        for move in moves:
            _, _, terminated, truncated, _ = env.step(move)
            if terminated or truncated:
                break
    elapsed = time.perf_counter() - start
    env.close()
    return elapsed


def alternate(rounds: int, bare: Callable[[], float], text: Callable[[], float]) -> tuple[float, float]:
    """Median seconds of each, measured in alternating rounds (so load changes hit both)."""
    bare_times, text_times = [], []
    for _ in range(rounds):
        bare_times.append(bare())
        text_times.append(text())
    return statistics.median(bare_times), statistics.median(text_times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--episodes", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    actions = np.random.default_rng(0).integers(0, 4, size=args.steps)
    bare_s, text_s = alternate(
        args.rounds, lambda: bare_lake(args.steps, actions), lambda: text_lake(args.steps, actions)
    )
    from gym_nemo.envs.text_games import hanoi_moves

    moves = hanoi_moves(3)
    game_bare_s, game_text_s = alternate(
        args.rounds, lambda: bare_hanoi(args.episodes, moves), lambda: text_hanoi(args.episodes, moves)
    )
    result = {
        "machine": f"{platform.machine()} {platform.system()}, {platform.python_version()}",
        "lake_steps": args.steps,
        "bare_steps_per_s": round(args.steps / bare_s),
        "text_steps_per_s": round(args.steps / text_s),
        "text_cost_factor": round(text_s / bare_s, 1),
        "text_us_per_step": round(1e6 * (text_s - bare_s) / args.steps, 1),
        "hanoi_episodes": args.episodes,
        "bare_hanoi_episodes_per_s": round(args.episodes / game_bare_s, 1),
        "text_hanoi_episodes_per_s": round(args.episodes / game_text_s, 1),
        "hanoi_cost_factor": round(game_text_s / game_bare_s, 2),
    }
    print(
        f"FrozenLake-v1, {args.steps} random steps (median of {args.rounds} alternating rounds):\n"
        f"  bare Gymnasium env      {result['bare_steps_per_s']:>9,} steps/s\n"
        f"  nemo/GymText-v0         {result['text_steps_per_s']:>9,} steps/s   "
        f"x{result['text_cost_factor']} the bare env's time per step (+{result['text_us_per_step']} us a step)\n"
        f"Tower of Hanoi (3 disks, 7 moves), {args.episodes} episodes:\n"
        f"  bare TextArena env      {result['bare_hanoi_episodes_per_s']:>9,} episodes/s\n"
        f"  nemo/TextArena-TowerOfHanoi-v0 {result['text_hanoi_episodes_per_s']:>9,} episodes/s   "
        f"x{result['hanoi_cost_factor']} the bare game's time"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
