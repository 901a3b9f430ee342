"""What ``nemo/GymText-v0`` knows about Gymnasium's toy-text worlds: action names a model can read, state
describers, declared reward ranges, and a planner that writes each task's reference script.

Any other Gymnasium env works with ``nemo/GymText-v0`` too (its ``ansi`` render, colour codes stripped, or a
describer you pass); this table only makes the four toy-text worlds read well and gives them references.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

#: A describer turns the world and its latest observation into text (the state the policy sees).
Describer = Callable[[gym.Env, Any], str]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def strip_ansi(text: str) -> str:
    """``text`` without ANSI colour codes (toy-text renders colour the player's cell)."""
    return _ANSI.sub("", text)


def describe_frozen_lake(world: gym.Env, observation: Any) -> str:
    """The lake as a grid with the player as ``P``, plus the player's row and column."""
    lake = world.unwrapped
    ncol = lake.ncol
    row, col = divmod(int(observation), ncol)
    grid = [[c.decode() for c in line] for line in lake.desc]
    grid[row][col] = "P"
    lines = "\n".join("".join(line) for line in grid)
    return (
        f"{lines}\n(S start, F frozen, H hole, G goal, P you.) You are at row {row}, column {col} "
        f"(counted from 0, top left)."
    )


_TAXI_LOCATIONS = "RGYB"


def describe_taxi(world: gym.Env, observation: Any) -> str:
    """The map with the taxi as ``T``, and the taxi, passenger and destination in words."""
    taxi = world.unwrapped
    row, col, passenger, destination = taxi.decode(int(observation))
    grid = [[c.decode() for c in line] for line in taxi.desc]
    grid[1 + row][2 * col + 1] = "T"
    where = "in the taxi" if passenger == 4 else f"waiting at {_TAXI_LOCATIONS[passenger]}"
    return (
        "\n".join("".join(line) for line in grid)
        + f"\n(T is the taxi, | a wall.) The taxi is at row {row}, column {col}. The passenger is {where}; "
        f"the destination is {_TAXI_LOCATIONS[destination]}."
    )


def describe_cliff_walking(world: gym.Env, observation: Any) -> str:
    """The grid (``x`` you, ``C`` cliff, ``T`` target, ``o`` safe) and the player's row and column."""
    rows, cols = world.unwrapped.shape
    cliff = world.unwrapped._cliff
    row, col = divmod(int(observation), cols)
    cells = [["C" if cliff[r, c] else "o" for c in range(cols)] for r in range(rows)]
    cells[rows - 1][cols - 1] = "T"
    cells[row][col] = "x"
    grid = "\n".join("  ".join(line) for line in cells)
    return f"{grid}\n(x you, C cliff, T target, o safe.) You are at row {row}, column {col}."


def describe_blackjack(world: gym.Env, observation: Any) -> str:
    """Blackjack's ``(player sum, dealer card, usable ace)`` in words (the env renders only images)."""
    player, dealer, ace = (int(v) for v in observation)
    dealer_card = "an ace" if dealer == 1 else f"a {dealer}"
    return f"Your hand sums to {player}{' (with an ace counted as 11)' if ace else ''}. The dealer shows {dealer_card}."


@dataclass(frozen=True)
class World:
    """What ``nemo/GymText-v0`` knows about one Gymnasium env id."""

    action_names: tuple[str, ...]
    describer: Describer | None
    reward_range: tuple[float, float]
    intro: str
    #: The world ends only when it is solved (Taxi, CliffWalking); else a win is ending on a positive reward.
    ends_only_when_solved: bool = False


WORLDS: dict[str, World] = {
    "FrozenLake-v1": World(
        ("left", "down", "right", "up"),
        describe_frozen_lake,
        (0.0, 1.0),
        "Walk from S to the goal G across a frozen lake without falling into a hole H. The ice may be slippery "
        "(a move can go sideways). Reward 1 for reaching the goal, else 0.",
    ),
    "FrozenLake8x8-v1": World(
        ("left", "down", "right", "up"),
        describe_frozen_lake,
        (0.0, 1.0),
        "Walk from S to the goal G across a frozen lake without falling into a hole H. The ice may be slippery "
        "(a move can go sideways). Reward 1 for reaching the goal, else 0.",
    ),
    "Taxi-v4": World(
        ("south", "north", "east", "west", "pickup", "dropoff"),
        describe_taxi,
        (-10.0, 20.0),
        "Drive the taxi to the passenger, pick them up, drive to the destination and drop them off. "
        "Reward -1 per step, +20 for a delivery, -10 for a pickup or dropoff in the wrong place.",
        ends_only_when_solved=True,
    ),
    "CliffWalking-v1": World(
        ("up", "right", "down", "left"),
        describe_cliff_walking,
        (-100.0, -1.0),
        "Walk from the start (bottom left) to the target T (bottom right) without stepping off the cliff C. "
        "Reward -1 per step, -100 for falling off the cliff (you are sent back to the start).",
        ends_only_when_solved=True,
    ),
    "Blackjack-v1": World(
        ("stick", "hit"),
        describe_blackjack,
        (-1.0, 1.5),
        "Play one hand of blackjack against the dealer: hit to draw a card, stick to stop. Get closer to 21 than "
        "the dealer without going over. Reward +1 for a win, 0 for a draw, -1 for a loss.",
    ),
}


def _greedy_policy_from_p(world: gym.Env, gamma: float = 0.99, tolerance: float = 1e-9) -> np.ndarray:
    """Value iteration on a toy-text world's transition table ``P``; returns the greedy action per state."""
    table = world.unwrapped.P
    states, actions = len(table), len(table[0])
    values = np.zeros(states)
    for _ in range(10_000):
        q = np.array(
            [
                [
                    sum(p * (r + (0.0 if done else gamma * values[s2])) for p, s2, r, done in table[s][a])
                    for a in range(actions)
                ]
                for s in range(states)
            ]
        )
        new = q.max(axis=1)
        if np.max(np.abs(new - values)) < tolerance:
            break
        values = new
    return q.argmax(axis=1)


def _blackjack_rule(observation: Any) -> int:
    """Hit below 17, else stick: a simple fixed strategy (not basic strategy)."""
    return 1 if int(observation[0]) < 17 else 0


def _policy_for(world: gym.Env) -> Callable[[Any], int] | None:
    """A state -> action policy for the world, or None where no planner applies."""
    if world.spec is not None and world.spec.name == "Blackjack":
        return _blackjack_rule
    if not hasattr(world.unwrapped, "P"):
        return None
    greedy = _greedy_policy_from_p(world)
    return lambda observation: int(greedy[int(observation)])


def plan_references(
    env_id: str, env_kwargs: dict[str, Any], seeds: Sequence[int], max_steps: int
) -> list[list[int] | None]:
    """Per seed, the actions a good policy takes in that seeded episode (None where no planner applies).

    The world is deterministic given its seed and the actions, so stepping the planner's policy through the
    seeded episode gives the exact script that replays it: for a slippery lake too, where it is the optimal
    policy's realised trajectory. Worlds with a transition table ``P`` (FrozenLake, Taxi, CliffWalking) use
    value iteration; Blackjack hits below 17.
    """
    world = gym.make(env_id, **env_kwargs)
    scripts: list[list[int] | None] = []
    try:
        policy = _policy_for(world)
        if policy is None:
            return [None] * len(seeds)
        for seed in seeds:
            observation, _ = world.reset(seed=int(seed))
            actions: list[int] = []
            for _ in range(max_steps):
                action = policy(observation)
                actions.append(action)
                observation, reward, terminated, truncated, _ = world.step(action)
                if not math.isfinite(float(reward)) or terminated or truncated:
                    break
            scripts.append(actions)
    finally:
        world.close()
    return scripts
