"""Per-batch training metrics from episode records, as a flat ``{name: float}`` dict a logger writes.

Works on :class:`~gym_nemo.rollout.records.EpisodeRecord` objects and on the rows of a run's JSONL alike (both
are read by field name, so this module imports nothing from ``rollout`` and every layer can use it). The
figures the collectors also report come from :func:`~gym_nemo.tracking.metrics.rollout_metrics`, their one
definition.

What it reports, and how:

* ``reward_mean``/``reward_std``/``pass_rate`` over the episodes that did *not* end in an infrastructure
  error: an infra error says nothing about the policy, so it is counted in ``infra_error_rate`` instead of
  being scored as a 0.
* ``mixed_group_rate``: the share of groups whose rewards are not all equal (NeMo Gym's "mixed-reward"
  metric; GRPO's advantages are zero in the others). A group is the record's ``group`` when set, else its
  ``task_id`` (the samples of one task).
* ``truncation_rate``, ``infra_error_rate``: shares of episodes.
* ``turns_mean``, ``policy_tokens_mean``, ``env_tokens_mean`` (prompt and env tokens), ``episode_s_mean``.
* ``env_s``, ``policy_s``, ``wall_s`` and ``env_time_share``: the collector's timings, when passed.
* Staleness, when records carry ``policy_versions`` (the policy version that produced each turn):
  ``staleness_mean``/``staleness_max`` (``current_version`` minus the oldest version in an episode; with no
  ``current_version``, the newest version seen in the batch) and ``version_switch_rate`` (episodes whose turns
  came from more than one version: weights were updated mid-episode).

>>> rows = [{"task_id": "t", "reward": 1.0, "num_turns": 1}, {"task_id": "t", "reward": 0.0, "num_turns": 2}]
>>> m = batch_metrics(rows)
>>> m["reward_mean"], m["mixed_group_rate"], m["turns_mean"]
(0.5, 1.0, 1.5)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from gym_nemo.tracking.metrics import _fields, rollout_metrics


def batch_metrics(
    records: Iterable[Any],
    *,
    current_version: int | None = None,
    wall_s: float | None = None,
    env_s: float | None = None,
    policy_s: float | None = None,
    prefix: str = "",
) -> dict[str, float]:
    """The batch's metrics (see the module docstring), keys prefixed with ``prefix`` (e.g. ``"rollout/"``).

    An empty batch gives ``{prefix + "episodes": 0.0}`` and the timings passed: nothing else is defined.
    """
    rows = [_fields(r) for r in records]
    out: dict[str, float] = {"episodes": float(len(rows))}
    for name, value in (("wall_s", wall_s), ("env_s", env_s), ("policy_s", policy_s)):
        if value is not None:
            out[name] = float(value)
    if wall_s and env_s is not None:
        out["env_time_share"] = float(env_s) / float(wall_s)
    if rows:
        out.update(_episode_metrics(rows))
        out.update(_staleness(rows, current_version))
    return {prefix + k: v for k, v in out.items()}


def _episode_metrics(records: list[dict[str, Any]]) -> dict[str, float]:
    """The shared figures come from :func:`~gym_nemo.tracking.metrics.rollout_metrics` (the one definition);
    what only a logger wants (spread, per-episode means) is added here."""
    m = rollout_metrics(records)
    n = len(records)
    scored = [float(r.get("reward", 0.0)) for r in records if not r.get("infra_error")]
    out = {
        "scored_episodes": float(len(scored)),
        "infra_error_rate": m.infra_error_rate,
        "truncation_rate": m.truncation_rate,
        "turns_mean": m.mean_turns,
        "episode_s_mean": float(np.mean([float(r.get("duration_s", 0.0) or 0.0) for r in records])),
        "groups": float(m.groups),
        "tool_error_rate": m.tool_error_rate,
    }
    if scored:
        out.update(
            reward_mean=m.mean_reward,
            reward_std=float(np.std(scored)),
            pass_rate=m.pass_rate,
            mixed_group_rate=m.mixed_group_rate,
        )
    if all(r.get("completion_mask") is not None for r in records):  # token-level records
        out["policy_tokens_mean"] = m.policy_tokens / n
        out["env_tokens_mean"] = m.env_tokens / n
        if any(r.get("finish_reasons") for r in records):
            out["cut_generation_rate"] = m.generation_truncation_rate
    return out


def _staleness(records: list[dict[str, Any]], current_version: int | None) -> dict[str, float]:
    versions = [[int(v) for v in (r.get("policy_versions") or []) if v is not None] for r in records]
    versions = [v for v in versions if v]
    if not versions:
        return {}
    now = current_version if current_version is not None else max(max(v) for v in versions)
    lag = [now - min(v) for v in versions]
    return {
        "staleness_mean": float(np.mean(lag)),
        "staleness_max": float(max(lag)),
        "version_switch_rate": float(np.mean([len(set(v)) > 1 for v in versions])),
    }
