"""Rollout collection: run a policy against vectorized envs and write one JSONL record per episode."""

from gym_nemo.rollout.async_collector import collect_token_rollouts_async
from gym_nemo.rollout.collect import RolloutSummary, collect_rollouts
from gym_nemo.rollout.records import EpisodeRecord, to_jsonable
from gym_nemo.rollout.token_rollout import TokenRolloutMetrics, collect_token_rollouts, token_rollout_metrics

__all__ = [
    "EpisodeRecord",
    "RolloutSummary",
    "TokenRolloutMetrics",
    "collect_rollouts",
    "collect_token_rollouts",
    "collect_token_rollouts_async",
    "to_jsonable",
    "token_rollout_metrics",
]
