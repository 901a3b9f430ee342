"""``GameEnv``: the shared shape of multi-step worlds (``nemo/GymText-v0``, TextArena games, TextWorld quests).

A task is a world seed: task ``i`` of the pool (``num_tasks`` of them, ids ``"<world>/seed-<i>"``) starts the
world with seed ``i``, so ``reset(seed=s)`` picks a task reproducibly and an episode replays exactly from its
task row and its actions (``gym-nemo reverify``). Every assistant message is one move: the world's reward,
termination and truncation come through on every step (``info["reward_components"]["world"]``), and the last
step's ``info["verdict"]`` says whether the game was won (``passed``) and the return; a message that
is not a move (empty, oversized, unparseable for the world) is not played, the observation says why, and in
``reward_mode="dense"`` it costs ``format_penalty``. A world that raises is an infrastructure error
(``truncated=True`` + ``info["infra_error"]``), never a score. ``reward_range`` is the world's own (negative or
above 1 where the world pays so), lowered by the format penalty in dense mode.

Subclasses supply ``start(world_seed) -> state text`` and ``play(message, components, info) -> (reply,
terminated, truncated)``; rows come from :func:`seed_rows`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from gymnasium.error import ResetNeeded

from gym_nemo.core.env import FORMAT_PENALTY, TextEnv, _sanitize
from gym_nemo.core.task import Task, input_messages

#: Keyword arguments that belong to :class:`TextEnv` (every other one a world env takes is the world's).
TEXT_ENV_KWARGS = frozenset(
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


def seed_rows(
    world: str, intro: str, num_tasks: int, meta: Mapping[str, Any], references: Sequence[Sequence[str] | None] = ()
) -> tuple[dict[str, Any], ...]:
    """Task rows for world seeds ``0..num_tasks-1``: the intro (headed by the world and seed, so every task's
    prompt differs: the trainer adapters find tasks by prompt) as the prompt, ``meta`` and the seed in
    ``verifier_metadata``, and the reference script of seed ``i`` (its messages, in order) where given."""
    if num_tasks < 1:
        raise ValueError("num_tasks must be >= 1")
    references = list(references) or [None] * num_tasks
    return tuple(
        {
            "responses_create_params": {"input": [{"role": "user", "content": f"[{world}, seed {seed}]\n{intro}"}]},
            "verifier_metadata": {
                "task_id": f"{world}/seed-{seed}",
                "world": world,
                **meta,
                "world_seed": seed,
                **({"reference": list(script)} if script else {}),
            },
        }
        for seed, script in zip(range(num_tasks), references, strict=True)
    )


def split_kwargs(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(TextEnv's kwargs, the world's kwargs)."""
    own = {k: v for k, v in kwargs.items() if k in TEXT_ENV_KWARGS}
    if own.get("max_attempts", 1) != 1:
        raise TypeError("max_attempts does not apply to a world: every step is rewarded, there is no final answer")
    return own, {k: v for k, v in kwargs.items() if k not in TEXT_ENV_KWARGS}


class GameEnv(TextEnv):
    """A seeded multi-step world as a text env; see the module docstring."""

    verifier_name = "world"
    default_max_turns = 100

    def __init__(
        self, *, reward_range: tuple[float, float], format_penalty: float = FORMAT_PENALTY, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.format_penalty = float(format_penalty)
        lo, hi = reward_range
        self.reward_range = (lo - (self.format_penalty if self.reward_mode == "dense" else 0.0), hi)

    @classmethod
    def row_to_task(cls, row: Mapping[str, Any], index: int) -> Task:
        meta = row.get("verifier_metadata") or {}
        seed = meta.get("world_seed")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"task row {index}: verifier_metadata.world_seed must be a non-negative integer")
        script = meta.get("reference")
        return Task(
            task_id=str(meta.get("task_id") or f"seed-{seed}"),
            messages=tuple(input_messages(row)),
            hidden={"world_seed": seed},
            row=row,
            reference=tuple(str(m) for m in script) if script else None,
        )

    # ------------------------------------------------------------------ hooks for subclasses
    def start(self, world_seed: int) -> str:
        """Start the world with this seed; return its opening state as text."""
        raise NotImplementedError

    def play(self, message: str, components: dict[str, float], info: dict[str, Any]) -> tuple[str, bool, bool]:
        """Play one message: set ``components["world"]`` (a move) or ``components["format"]`` (not a move, with
        ``-self.penalty``); return the reply, terminated, truncated. Raising is an infrastructure error. On the
        last step, ``info["won"]`` says whether the game was won (default: terminated with a positive reward);
        it becomes ``info["verdict"]["passed"]`` (pass@k in evaluations)."""
        raise NotImplementedError

    @property
    def penalty(self) -> float:
        """What a message that is not a move costs: ``format_penalty`` in dense mode, else 0."""
        return self.format_penalty if self.reward_mode == "dense" else 0.0

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Pick a task (a world seed) as every TextEnv does, start the world with it, and show its state."""
        _, info = super().reset(seed=seed, options=options)
        assert self._task is not None
        world_seed = int(self._task.hidden["world_seed"])
        state = self.start(world_seed)
        self._messages[-1]["content"] = f"{self._messages[-1]['content']}\n\n{state}".strip()
        info.update(messages=self.messages, world_seed=world_seed)
        return self._cap("\n\n".join(m["content"] for m in self._messages)), info

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
        if len(text) > self.max_action_chars:
            reply = (
                f"[error] Your message is {len(text):,} characters long; the limit is {self.max_action_chars:,}. "
                "It was not played."
            )
            components["format"] = -self.penalty
        elif not text.strip():
            reply, components["format"] = "[error] Your message was empty. Reply with your move.", -self.penalty
        else:
            try:
                reply, terminated, truncated = self.play(text, components, info)
                world_reward = components.get("world", 0.0)
                if not math.isfinite(world_reward):
                    raise ValueError(f"the world paid a non-finite reward {world_reward!r}")
            except Exception as exc:  # the world's failure, not the policy's
                components.pop("world", None)
                info["infra_error"] = f"{type(exc).__name__}: {exc}"
                reply, terminated, truncated = (
                    f"[infrastructure error] the world failed: {info['infra_error']}",
                    False,
                    True,
                )
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
        if self._done and "infra_error" not in info:
            won = bool(info.pop("won", terminated and components.get("world", 0.0) > 0))
            outcome = "won" if won else "ended" if terminated else "cut off"
            info["verdict"] = {
                "reward": self._return,
                "passed": won,
                "fraction": float(won),
                "reason": f"the episode {outcome} with return {self._return:g}",
                "verifier": f"{self.verifier_name}@{self.verifier_version}",
            }
        if self._done:
            info["task_row"] = dict(self._task.row)
            info["versions"] = self.versions()
        self._render_if_human()
        return self._cap(reply), reward, terminated, truncated, info
