"""Rollout metrics: defined once in :mod:`gym_nemo.tracking.metrics` (a low layer the loggers share), named here
for the collectors' users."""

from collections.abc import Sequence
from typing import Any

from gym_nemo.tracking import MetricsLogger, batch_metrics
from gym_nemo.tracking.metrics import RolloutMetrics, rollout_metrics


def log_batch(
    logger: MetricsLogger | None,
    records: Sequence[Any],
    metrics: RolloutMetrics,
    step: int,
    *,
    current_version: int | None = None,
    prefix: str = "rollout/",
) -> None:
    """Write a batch's metrics (``batch_metrics``: rewards, mixed groups, rates, tokens, timings, staleness) to
    ``logger`` at ``step``; nothing without a logger. What every collector calls when given ``logger=``."""
    if logger is None:
        return
    timings = {"wall_s": metrics.duration_s, "env_s": metrics.env_s, "policy_s": metrics.policy_s}
    logger.log(batch_metrics(records, current_version=current_version, prefix=prefix, **timings), step=step)


#: Earlier names of :class:`RolloutMetrics` / :func:`rollout_metrics` (text and token collectors had one each).
RolloutSummary = TokenRolloutMetrics = RolloutMetrics
token_rollout_metrics = rollout_metrics

__all__ = [
    "RolloutMetrics",
    "RolloutSummary",
    "TokenRolloutMetrics",
    "log_batch",
    "rollout_metrics",
    "token_rollout_metrics",
]
