"""The one definition of rollout metrics: what every collector returns, ``gym-nemo rollout`` prints and
:func:`~gym_nemo.tracking.batch.batch_metrics` logs. Reads records by field name, so ``EpisodeRecord`` objects and
their JSONL rows work alike and this module imports nothing of gym_nemo (every layer can use it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def _fields(record: Any) -> dict[str, Any]:
    """A record's fields by name: a JSONL row as it is, an ``EpisodeRecord``'s attribute dict (not a copy). Once a
    record, so each field read is a ``dict.get`` (``isinstance`` against ``dict``, not the ``Mapping`` ABC, whose
    check costs ~1 us)."""
    return record if isinstance(record, dict) else vars(record)


@dataclass
class RolloutMetrics:
    """Figures over a batch of episodes (see :func:`rollout_metrics`); token counts are 0 for text episodes."""

    episodes: int = 0
    groups: int = 0
    mean_reward: float = 0.0
    pass_rate: float = 0.0
    mixed_group_rate: float = 0.0
    mean_turns: float = 0.0
    truncation_rate: float = 0.0
    generation_truncation_rate: float = 0.0
    infra_error_rate: float = 0.0
    tool_error_rate: float = 0.0
    policy_tokens: int = 0
    env_tokens: int = 0
    duration_s: float = 0.0
    policy_s: float = 0.0
    env_s: float = 0.0
    token_level: bool = False

    @property
    def tokens_per_s(self) -> float:
        """Policy tokens generated per second of wall time."""
        return self.policy_tokens / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def env_time_share(self) -> float:
        """Share of the wall time spent in the envs (reset + step, tools and verifiers included)."""
        return self.env_s / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def episodes_per_s(self) -> float:
        return self.episodes / self.duration_s if self.duration_s > 0 else 0.0

    def format(self) -> str:
        """The table ``gym-nemo rollout`` prints (token lines only for token-level batches)."""
        if not self.token_level:
            return "\n".join(
                [
                    f"episodes          {self.episodes}",
                    f"mean reward       {self.mean_reward:.4f}  (infra errors excluded)",
                    f"pass rate         {self.pass_rate:.4f}",
                    f"mean turns        {self.mean_turns:.2f}",
                    f"truncation rate   {self.truncation_rate:.4f}",
                    f"infra-error rate  {self.infra_error_rate:.4f}",
                    f"episodes/s        {self.episodes_per_s:.2f}  ({self.duration_s:.1f} s)",
                ]
            )
        return "\n".join(
            [
                f"episodes          {self.episodes}  ({self.groups} groups)",
                f"mean reward       {self.mean_reward:.4f}  (infra errors excluded)",
                f"pass rate         {self.pass_rate:.4f}",
                f"mixed groups      {self.mixed_group_rate:.4f}  (groups whose rewards differ)",
                f"mean turns        {self.mean_turns:.2f}",
                f"truncation rate   {self.truncation_rate:.4f}  (episodes)",
                f"cut generations   {self.generation_truncation_rate:.4f}  (turns without an end-of-turn token)",
                f"infra-error rate  {self.infra_error_rate:.4f}",
                f"tool-error rate   {self.tool_error_rate:.4f}",
                f"tokens            {self.policy_tokens} policy, {self.env_tokens} env",
                f"tokens/s          {self.tokens_per_s:.1f}  ({self.duration_s:.1f} s)",
                f"env time share    {self.env_time_share:.4f}",
            ]
        )


def rollout_metrics(
    records: Sequence[Any], *, duration_s: float = 0.0, policy_s: float = 0.0, env_s: float = 0.0
) -> RolloutMetrics:
    """Metrics of a batch of records (``EpisodeRecord`` objects or their JSONL rows; text or token level).

    ``mixed_group_rate`` is the share of groups (a record's ``group``, else its ``task_id``) whose rewards are
    not all equal: GRPO learns only from those. Infra-error episodes are left out of rewards and groups.
    ``tool_error_rate`` is the share of tool messages that report an error.
    """
    n = len(records)
    if n == 0:
        return RolloutMetrics(duration_s=duration_s, policy_s=policy_s, env_s=env_s)
    rows = [_fields(r) for r in records]
    scored = [r for r in rows if r.get("infra_error") is None]
    groups: dict[Any, list[float]] = {}
    for r in scored:
        group = r.get("group")
        key = ("group", group) if group is not None else ("task", str(r.get("task_id")))
        groups.setdefault(key, []).append(float(r.get("reward", 0.0)))
    finishes = [f for r in rows for f in (r.get("finish_reasons") or [])]
    tools = [m for r in rows for m in (r.get("messages") or []) if m.get("role") == "tool"]
    masks = [m for r in rows for m in (r.get("completion_mask") or [])]
    return RolloutMetrics(
        episodes=n,
        groups=len(groups),
        mean_reward=float(np.mean([float(r.get("reward", 0.0)) for r in scored])) if scored else 0.0,
        pass_rate=float(np.mean([bool((r.get("verdict") or {}).get("passed")) for r in scored])) if scored else 0.0,
        mixed_group_rate=float(np.mean([len(set(g)) > 1 for g in groups.values()])) if groups else 0.0,
        mean_turns=float(np.mean([int(r.get("num_turns", 0) or 0) for r in rows])),
        truncation_rate=sum(bool(r.get("truncated")) for r in rows) / n,
        generation_truncation_rate=finishes.count("length") / len(finishes) if finishes else 0.0,
        infra_error_rate=(n - len(scored)) / n,
        tool_error_rate=sum(m.get("name") == "error" for m in tools) / len(tools) if tools else 0.0,
        policy_tokens=sum(masks),
        env_tokens=sum(len(r.get("prompt_ids") or []) for r in rows) + len(masks) - sum(masks),
        duration_s=duration_s,
        policy_s=policy_s,
        env_s=env_s,
        token_level=any(r.get("completion_ids") is not None for r in rows),
    )
