"""Rollout collection: run a policy against envs and write one JSONL record per episode.

Every collector plays its episodes with the engine (:mod:`gym_nemo.rollout.engine`) and reports
:class:`~gym_nemo.rollout.metrics.RolloutMetrics`.
"""

from gym_nemo.rollout.async_collector import collect_token_rollouts_async
from gym_nemo.rollout.collect import collect_rollouts
from gym_nemo.rollout.engine import EpisodeTrace, aplay, play, play_lockstep, policy_tokens
from gym_nemo.rollout.metrics import (
    RolloutMetrics,
    RolloutSummary,
    TokenRolloutMetrics,
    rollout_metrics,
    token_rollout_metrics,
)
from gym_nemo.rollout.records import EpisodeRecord, to_jsonable
from gym_nemo.rollout.token_rollout import collect_token_rollouts

__all__ = [
    "EpisodeRecord",
    "EpisodeTrace",
    "RolloutMetrics",
    "RolloutSummary",
    "TokenRolloutMetrics",
    "aplay",
    "collect_rollouts",
    "collect_token_rollouts",
    "collect_token_rollouts_async",
    "play",
    "play_lockstep",
    "policy_tokens",
    "rollout_metrics",
    "to_jsonable",
    "token_rollout_metrics",
]
