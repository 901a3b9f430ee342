"""Per-batch training metrics from episode records, as a flat ``{name: float}`` dict a logger writes.

Works on :class:`~gym_nemo.rollout.records.EpisodeRecord` objects and on the rows of a run's JSONL alike (both
are read by field name, so this module imports nothing from ``rollout`` and every layer can use it).

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

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np


def _get(record: Any, name: str, default: Any = None) -> Any:
    """A field of an ``EpisodeRecord`` or a JSONL row."""
    if isinstance(record, Mapping):
        return record.get(name, default)
    return getattr(record, name, default)


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
    records = list(records)
    out: dict[str, float] = {"episodes": float(len(records))}
    for name, value in (("wall_s", wall_s), ("env_s", env_s), ("policy_s", policy_s)):
        if value is not None:
            out[name] = float(value)
    if wall_s and env_s is not None:
        out["env_time_share"] = float(env_s) / float(wall_s)
    if records:
        out.update(_episode_metrics(records))
        out.update(_staleness(records, current_version))
    return {prefix + k: v for k, v in out.items()}


def _episode_metrics(records: list[Any]) -> dict[str, float]:
    n = len(records)
    scored = [r for r in records if not _get(r, "infra_error")]
    rewards = np.array([float(_get(r, "reward", 0.0)) for r in scored])
    groups: dict[Any, set[float]] = {}
    for r in scored:
        key = _get(r, "group")
        key = ("task", str(_get(r, "task_id"))) if key is None else ("group", key)
        groups.setdefault(key, set()).add(float(_get(r, "reward", 0.0)))
    out = {
        "scored_episodes": float(len(scored)),
        "infra_error_rate": (n - len(scored)) / n,
        "truncation_rate": sum(bool(_get(r, "truncated")) for r in records) / n,
        "turns_mean": float(np.mean([int(_get(r, "num_turns", 0) or 0) for r in records])),
        "episode_s_mean": float(np.mean([float(_get(r, "duration_s", 0.0) or 0.0) for r in records])),
        "groups": float(len(groups)),
    }
    if scored:
        out["reward_mean"] = float(rewards.mean())
        out["reward_std"] = float(rewards.std())
        out["pass_rate"] = float(np.mean([bool((_get(r, "verdict") or {}).get("passed")) for r in scored]))
        out["mixed_group_rate"] = float(np.mean([len(g) > 1 for g in groups.values()]))
    masks = [_get(r, "completion_mask") for r in records]
    if all(m is not None for m in masks):  # token-level records
        policy = [sum(m) for m in masks]
        env = [len(_get(r, "prompt_ids") or []) + len(m) - p for r, m, p in zip(records, masks, policy, strict=True)]
        out["policy_tokens_mean"] = float(np.mean(policy))
        out["env_tokens_mean"] = float(np.mean(env))
        finishes = [f for r in records for f in (_get(r, "finish_reasons") or [])]
        if finishes:
            out["cut_generation_rate"] = finishes.count("length") / len(finishes)
    return out


def _staleness(records: list[Any], current_version: int | None) -> dict[str, float]:
    versions = [[int(v) for v in (_get(r, "policy_versions") or []) if v is not None] for r in records]
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
