"""Rollout collection: run a policy against vectorized envs and write one JSONL record per episode."""

from gym_nemo.rollout.collect import RolloutSummary, collect_rollouts
from gym_nemo.rollout.records import EpisodeRecord, to_jsonable
from gym_nemo.rollout.token_rollout import collect_token_rollouts

__all__ = ["EpisodeRecord", "RolloutSummary", "collect_rollouts", "collect_token_rollouts", "to_jsonable"]
