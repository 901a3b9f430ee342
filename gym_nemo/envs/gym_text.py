"""``nemo/GymText-v0``: any Gymnasium env with a ``Discrete`` or ``MultiDiscrete`` action space as a text env.

``gym.make("nemo/GymText-v0", env_id="FrozenLake-v1", is_slippery=False)`` wraps the Gymnasium env (the
"world"; keyword arguments this env does not take go to it). Each observation describes the world's state (its
``ansi`` render with colour codes stripped, or a ``describer(world, observation) -> str`` you pass) and lists
the legal actions; each assistant message is one action: the last ``<action>...</action>`` tag in it, or the
whole message, naming an action (``left``) or giving its index (``0``; ``MultiDiscrete``: one index per
dimension, ``"1 0 2"``). Anything else is not played: the observation says why and lists the legal actions, and
in ``reward_mode="dense"`` it costs the format penalty. The world's reward, termination and truncation come
through unchanged on every step (``info["reward_components"]["world"]``); the declared ``reward_range`` is the
world's (negative or above 1 where the world pays so), lowered by the format penalty in dense mode.

Tasks, seeds, replay and the reward contract are :mod:`gym_nemo.envs.game`'s. The toy-text worlds
(``nemo/FrozenLake-v0``, ``nemo/Taxi-v0``, ``nemo/CliffWalking-v0``, ``nemo/Blackjack-v0``) have readable action
names and a reference script per task: the actions a planner takes in that seeded episode (value iteration;
Blackjack hits below 17).

Note for worlds that charge per step (Taxi, CliffWalking): an unplayed message does not step the world, so it
costs nothing there in sparse mode; use ``reward_mode="dense"`` when training, or a ``format_penalty`` at least
the world's cost of a step.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import load_env_creator

from gym_nemo.core.env import FORMAT_PENALTY
from gym_nemo.core.task import TaskSource
from gym_nemo.envs.game import GameEnv, seed_rows, split_kwargs
from gym_nemo.envs.gym_text_worlds import WORLDS, Describer, plan_references, strip_ansi

DEFAULT_WORLD = "FrozenLake-v1"
DEFAULT_NUM_TASKS = 100
SYSTEM_PROMPT = (
    "You are playing a game, one action per message. Each turn you see the state and the legal actions; "
    "reply with exactly one action, its name or its number, inside <action></action> tags."
)
_ACTION_TAG = re.compile(r"<action>(.*?)</action>", re.IGNORECASE | re.DOTALL)
_ROWS: dict[str, tuple[dict[str, Any], ...]] = {}


def world_rows(
    env_id: str, num_tasks: int, world_kwargs: Mapping[str, Any], intro: str | None = None
) -> tuple[dict[str, Any], ...]:
    """Task rows for world seeds ``0..num_tasks-1`` (cached), each with its reference script if one exists."""
    key = json.dumps([env_id, num_tasks, world_kwargs, intro], sort_keys=True, default=repr)
    if key not in _ROWS:
        world = WORLDS.get(env_id)
        if intro is None:
            intro = world.intro if world else f"You are playing the Gymnasium environment {env_id}."
        max_steps = gym.spec(env_id).max_episode_steps or 200
        scripts = plan_references(env_id, dict(world_kwargs), range(num_tasks), max_steps)
        references = [None if s is None else [f"<action>{a}</action>" for a in s] for s in scripts]
        meta = {"world_kwargs": json.loads(json.dumps(dict(world_kwargs), default=repr))}
        _ROWS[key] = seed_rows(env_id, intro, num_tasks, meta, references)
    return _ROWS[key]


def _action_text(space: spaces.Space, action: Any) -> str:
    if isinstance(space, spaces.MultiDiscrete):
        return " ".join(str(int(a)) for a in np.asarray(action).ravel())
    return str(int(action))


class GymTextEnv(GameEnv):
    """A Gymnasium env as a text env; see the module docstring.

    Args (beyond :class:`TextEnv`'s; every other keyword goes to ``gym.make(env_id, ...)``):
        env_id: the Gymnasium env (the world).
        action_names: a name per ``Discrete`` action (default: the known worlds' names, else the indices).
        describer: ``describer(world, observation) -> str`` (default: the known worlds' own, else the
            world's ``ansi`` render with colour codes stripped).
        num_tasks: how many world seeds make the task pool.
        reward_range: the world's reward bounds (default: the known worlds' own, else unbounded).
        format_penalty: the cost of an unplayed message in dense mode.
        intro: the first user message's text above the state (default: the known worlds' rules).
    """

    verifier_name = "gym_text"
    verifier_version = "1"
    default_system_prompt = SYSTEM_PROMPT

    def __init__(
        self,
        env_id: str = DEFAULT_WORLD,
        *,
        action_names: Sequence[str] | None = None,
        describer: Describer | None = None,
        num_tasks: int = DEFAULT_NUM_TASKS,
        reward_range: tuple[float, float] | None = None,
        format_penalty: float = FORMAT_PENALTY,
        intro: str | None = None,
        **kwargs: Any,
    ) -> None:
        own, self.world_kwargs = split_kwargs(kwargs)
        known = WORLDS.get(env_id)
        self.world_id = env_id
        self.ends_only_when_solved = bool(known and known.ends_only_when_solved)
        self.describer = describer or (known.describer if known else None)
        if self.describer is None and "ansi" not in _render_modes(env_id):
            raise ValueError(f"{env_id} has no 'ansi' render mode: pass describer=callable(world, observation) -> str")
        self.world = gym.make(env_id, render_mode=None if self.describer else "ansi", **self.world_kwargs)
        try:
            self.action_names = self._names(action_names, known)
        except ValueError:
            self.world.close()
            raise
        if own.get("data") is None:
            own["data"] = world_rows(env_id, num_tasks, self.world_kwargs, intro)
        bounds = reward_range or (known.reward_range if known else (-math.inf, math.inf))
        super().__init__(reward_range=bounds, format_penalty=format_penalty, **own)
        self._world_obs: Any = None

    def _names(self, action_names: Sequence[str] | None, known: Any) -> tuple[str, ...] | None:
        space = self.world.action_space
        if isinstance(space, spaces.MultiDiscrete):
            if action_names is not None:
                raise ValueError("action_names apply to Discrete action spaces only")
            return None
        if not isinstance(space, spaces.Discrete):
            raise ValueError(f"{self.world_id} has a {type(space).__name__} action space; Discrete/MultiDiscrete only")
        names = action_names if action_names is not None else (known.action_names if known else None)
        if names is None:
            return None
        if len(names) != int(space.n):
            raise ValueError(f"{self.world_id} has {int(space.n)} actions; got {len(names)} action names")
        return tuple(str(a).strip().lower() for a in names)

    @classmethod
    def load_tasks(
        cls,
        data: Any = None,
        task_ids: Sequence[str] | None = None,
        *,
        env_id: str = DEFAULT_WORLD,
        num_tasks: int = DEFAULT_NUM_TASKS,
        intro: str | None = None,
        **kwargs: Any,
    ) -> TaskSource:
        if data is None:
            world_kwargs = {k: v for k, v in split_kwargs(kwargs)[1].items() if k not in _THIS_ENV_KWARGS}
            data = world_rows(env_id, num_tasks, world_kwargs, intro)
        return super().load_tasks(data, task_ids)

    @classmethod
    def bundled_rows(cls) -> Sequence[Mapping[str, Any]]:
        return world_rows(DEFAULT_WORLD, DEFAULT_NUM_TASKS, {})

    # ------------------------------------------------------------------ the world as text
    def legal_actions(self) -> str:
        """The legal actions, as the observation lists them."""
        space = self.world.action_space
        if isinstance(space, spaces.MultiDiscrete):
            nvec = space.nvec.ravel()
            ranges = ", ".join(f"0-{int(n) - 1}" for n in nvec)
            example = " ".join("0" for _ in nvec)
            return (
                f"Legal actions: one index per dimension, space-separated ({ranges}), e.g. <action>{example}</action>."
            )
        start = int(space.start)
        if self.action_names is None:
            return f"Legal actions: an integer from {start} to {start + int(space.n) - 1}."
        listed = ", ".join(f"{name} ({start + i})" for i, name in enumerate(self.action_names))
        return f"Legal actions: {listed}. Reply with the name or the number."

    def describe(self) -> str:
        """The world's current state as text."""
        if self.describer is not None:
            return str(self.describer(self.world, self._world_obs))
        return strip_ansi(str(self.world.render() or "")).strip("\n")

    def parse_action(self, text: str) -> tuple[Any, str | None]:
        """The world action named by a message, or ``(None, why not)``."""
        tags = _ACTION_TAG.findall(text)
        candidate = (tags[-1] if tags else text).strip().strip("`'\".[]()").strip().lower()
        space = self.world.action_space
        if isinstance(space, spaces.MultiDiscrete):
            parts = candidate.replace(",", " ").split()
            nvec = space.nvec.ravel()
            if len(parts) == len(nvec) and all(p.isdigit() and int(p) < n for p, n in zip(parts, nvec, strict=True)):
                return np.array([int(p) for p in parts], dtype=space.dtype).reshape(space.shape), None
        else:
            start, n = int(space.start), int(space.n)
            if self.action_names is not None and candidate in self.action_names:
                return start + self.action_names.index(candidate), None
            if re.fullmatch(r"-?\d{1,9}", candidate) and start <= int(candidate) < start + n:
                return int(candidate), None
        shown = candidate if len(candidate) <= 60 else f"{candidate[:60]}..."
        where = "inside your <action></action> tag" if tags else "as your message"
        return None, f"{shown!r} {where} is not a legal action. {self.legal_actions()}"

    # ------------------------------------------------------------------ GameEnv hooks
    def start(self, world_seed: int) -> str:
        self._world_obs, _ = self.world.reset(seed=world_seed)
        return f"{self.describe()}\n\n{self.legal_actions()}"

    def play(self, message: str, components: dict[str, float], info: dict[str, Any]) -> tuple[str, bool, bool]:
        world_action, why = self.parse_action(message)
        if world_action is None:
            components["format"] = -self.penalty
            return f"[error] {why}", False, False
        self._world_obs, world_reward, terminated, truncated, world_info = self.world.step(world_action)
        components["world"] = float(world_reward)
        state = self.describe()
        played = _action_text(self.world.action_space, world_action)
        info.update(world_action=played, world_info=_jsonable(world_info))
        if self.action_names is not None:
            played = self.action_names[int(world_action) - int(self.world.action_space.start)]
        reward_text = f"{float(world_reward):g}"
        if terminated and self.ends_only_when_solved:
            info["won"] = True
        if terminated or truncated:
            how = "the episode is over" if terminated else "the world's step limit is reached"
            return f"You played {played}. Reward {reward_text}; {how}.\n\n{state}", bool(terminated), bool(truncated)
        return f"You played {played}. Reward {reward_text}.\n\n{state}\n\n{self.legal_actions()}", False, False

    def versions(self) -> dict[str, str]:
        return {**super().versions(), "world": self.world_id, "gymnasium": gym.__version__}

    def close(self) -> None:
        self.world.close()
        super().close()


#: Keyword arguments of ``GymTextEnv.__init__`` that are not the world's (``load_tasks`` filters them out).
_THIS_ENV_KWARGS = frozenset({"action_names", "describer", "reward_range", "format_penalty"})


def _render_modes(env_id: str) -> Sequence[str]:
    """The render modes a registered env declares (read from its class, without building it)."""
    entry_point = gym.spec(env_id).entry_point
    creator = load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point
    return getattr(creator, "metadata", {}).get("render_modes", ())


def _jsonable(info: Mapping[str, Any]) -> dict[str, Any]:
    """The world's info as plain JSON types (numpy arrays and scalars converted)."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            value = repr(value)
        out[str(key)] = value
    return out
