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

Tasks are world seeds: task ``i`` of the pool (``num_tasks`` of them, ids ``"<env_id>/seed-<i>"``) resets the
world with seed ``i``, so ``reset(seed=s)`` picks a task reproducibly and an episode replays exactly from its
task row and actions (``gym-nemo reverify``). The toy-text worlds (``nemo/FrozenLake-v0``, ``nemo/Taxi-v0``,
``nemo/CliffWalking-v0``, ``nemo/Blackjack-v0``) have readable action names and a reference script per task:
the actions a planner takes in that seeded episode (value iteration; Blackjack hits below 17).

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
from gymnasium.error import ResetNeeded

from gym_nemo.core.env import FORMAT_PENALTY, TextEnv, _sanitize
from gym_nemo.core.task import Task, TaskSource, input_messages
from gym_nemo.envs.gym_text_worlds import WORLDS, Describer, plan_references, strip_ansi

DEFAULT_WORLD = "FrozenLake-v1"
DEFAULT_NUM_TASKS = 100
SYSTEM_PROMPT = (
    "You are playing a game, one action per message. Each turn you see the state and the legal actions; "
    "reply with exactly one action, its name or its number, inside <action></action> tags."
)
_ACTION_TAG = re.compile(r"<action>(.*?)</action>", re.IGNORECASE | re.DOTALL)
#: Keyword arguments that belong to this env (and TextEnv), not to the world.
_OWN_KWARGS = frozenset(
    {
        "data",
        "task_ids",
        "max_turns",
        "max_attempts",
        "reward_mode",
        "system_prompt",
        "max_action_chars",
        "max_observation_chars",
        "render_mode",
    }
)
_ROWS: dict[str, tuple[dict[str, Any], ...]] = {}


def world_rows(env_id: str, num_tasks: int, world_kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    """Task rows for world seeds ``0..num_tasks-1`` (cached), each with its reference script if one exists."""
    if num_tasks < 1:
        raise ValueError("num_tasks must be >= 1")
    key = json.dumps([env_id, num_tasks, world_kwargs], sort_keys=True, default=repr)
    if key not in _ROWS:
        world = WORLDS.get(env_id)
        intro = world.intro if world else f"You are playing the Gymnasium environment {env_id}."
        spec = gym.spec(env_id)
        max_steps = spec.max_episode_steps or 200
        scripts = plan_references(env_id, dict(world_kwargs), range(num_tasks), max_steps)
        _ROWS[key] = tuple(
            {
                "responses_create_params": {"input": [{"role": "user", "content": intro}]},
                "verifier_metadata": {
                    "task_id": f"{env_id}/seed-{seed}",
                    "world": env_id,
                    "world_kwargs": json.loads(json.dumps(dict(world_kwargs), default=repr)),
                    "world_seed": seed,
                    **({"reference_actions": script} if script is not None else {}),
                },
            }
            for seed, script in zip(range(num_tasks), scripts, strict=True)
        )
    return _ROWS[key]


def _action_text(space: spaces.Space, action: Any) -> str:
    if isinstance(space, spaces.MultiDiscrete):
        return " ".join(str(int(a)) for a in np.asarray(action).ravel())
    return str(int(action))


class GymTextEnv(TextEnv):
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
    default_max_turns = 100
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
        own = {k: v for k, v in kwargs.items() if k in _OWN_KWARGS}
        self.world_kwargs = {k: v for k, v in kwargs.items() if k not in _OWN_KWARGS}
        if own.get("max_attempts", 1) != 1:
            raise TypeError("max_attempts does not apply to nemo/GymText-v0: every step of the world is rewarded")
        known = WORLDS.get(env_id)
        self.world_id = env_id
        self.describer = describer or (known.describer if known else None)
        render_mode = None if self.describer is not None else "ansi"
        self.world = gym.make(env_id, render_mode=render_mode, **self.world_kwargs)
        if self.describer is None and "ansi" not in self.world.metadata.get("render_modes", ()):
            self.world.close()
            raise ValueError(f"{env_id} has no 'ansi' render mode: pass describer=callable(world, observation) -> str")
        space = self.world.action_space
        if isinstance(space, spaces.Discrete):
            n = int(space.n)
            names = tuple(action_names) if action_names is not None else (known.action_names if known else None)
            if names is not None and len(names) != n:
                raise ValueError(f"{env_id} has {n} actions; got {len(names)} action names")
            self.action_names = tuple(str(a).strip().lower() for a in names) if names else None
        elif isinstance(space, spaces.MultiDiscrete):
            if action_names is not None:
                raise ValueError("action_names apply to Discrete action spaces only")
            self.action_names = None
        else:
            self.world.close()
            raise ValueError(f"{env_id} has a {type(space).__name__} action space; only Discrete/MultiDiscrete work")
        self.format_penalty = float(format_penalty)
        self.num_tasks = num_tasks
        self.intro = intro
        if own.get("data") is None:
            own["data"] = world_rows(env_id, num_tasks, self.world_kwargs)
        super().__init__(**own)
        lo, hi = reward_range or (known.reward_range if known else (-math.inf, math.inf))
        self.reward_range = (lo - (self.format_penalty if self.reward_mode == "dense" else 0.0), hi)
        self._world_obs: Any = None

    @classmethod
    def load_tasks(
        cls,
        data: Any = None,
        task_ids: Sequence[str] | None = None,
        *,
        env_id: str = DEFAULT_WORLD,
        num_tasks: int = DEFAULT_NUM_TASKS,
        **kwargs: Any,
    ) -> TaskSource:
        if data is None:
            world_kwargs = {k: v for k, v in kwargs.items() if k not in _OWN_KWARGS and k not in _THIS_ENV_KWARGS}
            data = world_rows(env_id, num_tasks, world_kwargs)
        return super().load_tasks(data, task_ids)

    @classmethod
    def bundled_rows(cls) -> Sequence[Mapping[str, Any]]:
        return world_rows(DEFAULT_WORLD, DEFAULT_NUM_TASKS, {})

    @classmethod
    def row_to_task(cls, row: Mapping[str, Any], index: int) -> Task:
        meta = row.get("verifier_metadata") or {}
        seed = meta.get("world_seed")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"task row {index}: verifier_metadata.world_seed must be a non-negative integer")
        script = meta.get("reference_actions")
        reference = None if not script else tuple(f"<action>{a}</action>" for a in script)
        return Task(
            task_id=str(meta.get("task_id") or f"seed-{seed}"),
            messages=tuple(input_messages(row)),
            hidden={"world_seed": seed},
            row=row,
            reference=reference,
        )

    # ------------------------------------------------------------------ the world as text
    def legal_actions(self) -> str:
        """The legal actions, as the observation lists them."""
        space = self.world.action_space
        if isinstance(space, spaces.MultiDiscrete):
            ranges = ", ".join(f"0-{int(n) - 1}" for n in space.nvec.ravel())
            return f"Legal actions: one index per dimension, space-separated ({ranges}), e.g. <action>{'0 ' * (len(space.nvec.ravel()) - 1)}0</action>."
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

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Pick a task (a world seed) as every TextEnv does, reset the world with it, and show its state."""
        _, info = super().reset(seed=seed, options=options)
        assert self._task is not None
        world_seed = int(self._task.hidden["world_seed"])
        self._world_obs, world_info = self.world.reset(seed=world_seed)
        intro = self._messages[-1]["content"] if self.intro is None else self.intro
        self._messages[-1]["content"] = f"{intro}\n\n{self.describe()}\n\n{self.legal_actions()}"
        info.update(messages=self.messages, world_seed=world_seed, world_info=_jsonable(world_info))
        observation = "\n\n".join(m["content"] for m in self._messages)
        return self._cap(observation), info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._task is None:
            raise ResetNeeded("call reset() before step()")
        if self._done:
            raise ResetNeeded("the episode is over; call reset() before step()")
        self._turn += 1
        text, note = _sanitize(action)
        self._messages.append({"role": "assistant", "content": text})
        info: dict[str, Any] = {"turn": self._turn, "task_id": self._task.task_id}
        components: dict[str, float] = {}
        terminated = truncated = False
        penalty = self.format_penalty if self.reward_mode == "dense" else 0.0
        if len(text) > self.max_action_chars:
            reply = (
                f"[error] Your message is {len(text):,} characters long; the limit is {self.max_action_chars:,}. "
                f"It was not played. {self.legal_actions()}"
            )
            components["format"] = -penalty
        else:
            world_action, why = self.parse_action(text)
            if world_action is None:
                reply, components["format"] = f"[error] {why}", -penalty
            else:
                reply, terminated, truncated = self._play(world_action, components, info)
        if note is not None:
            reply = f"[note] {note}.\n{reply}"
        if not (terminated or truncated) and self._turn >= self.max_turns:
            truncated = True
            reply = f"{reply}\n\n[turn limit of {self.max_turns} reached; the episode ends]"
        self._messages.append({"role": "user", "content": reply})
        lo, hi = self.reward_range
        reward = float(min(max(sum(components.values()), lo), hi))
        self._return += reward
        self._done = terminated or truncated
        info.update(reward_components=components, episode_return=self._return, messages=self.messages)
        if self._done:
            info["task_row"] = dict(self._task.row)
            info["versions"] = self.versions()
        self._render_if_human()
        return self._cap(reply), reward, terminated, truncated, info

    def _play(self, world_action: Any, components: dict[str, float], info: dict[str, Any]) -> tuple[str, bool, bool]:
        """Step the world; a world that raises or pays a non-finite reward is an infrastructure error."""
        try:
            self._world_obs, world_reward, terminated, truncated, world_info = self.world.step(world_action)
            world_reward = float(world_reward)
            if not math.isfinite(world_reward):
                raise ValueError(f"the world paid a non-finite reward {world_reward!r}")
            state = self.describe()
        except Exception as exc:  # the world's failure, not the policy's
            info["infra_error"] = f"{self.world_id} failed: {type(exc).__name__}: {exc}"
            return f"[infrastructure error] {info['infra_error']}", False, True
        components["world"] = world_reward
        info.update(world_action=_action_text(self.world.action_space, world_action), world_info=_jsonable(world_info))
        played = _action_text(self.world.action_space, world_action)
        if self.action_names is not None:
            played = self.action_names[int(world_action) - int(self.world.action_space.start)]
        reward_text = f"{world_reward:g}"
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
_THIS_ENV_KWARGS = frozenset({"action_names", "describer", "reward_range", "format_penalty", "intro"})


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
