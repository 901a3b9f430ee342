"""Training metrics where trainers look: per-batch metrics of episode records and loggers for TensorBoard,
Weights & Biases (offline), trackio and JSONL. A low layer: imports nothing else of gym_nemo, so rollout,
eval, integrations and examples can all use it."""

from gym_nemo.tracking.batch import batch_metrics
from gym_nemo.tracking.loggers import (
    BACKENDS,
    JsonlLogger,
    MetricsLogger,
    MultiLogger,
    TensorBoardLogger,
    TrackioLogger,
    WandbLogger,
    make_logger,
)
from gym_nemo.tracking.metrics import RolloutMetrics, rollout_metrics

__all__ = [
    "BACKENDS",
    "JsonlLogger",
    "MetricsLogger",
    "MultiLogger",
    "RolloutMetrics",
    "TensorBoardLogger",
    "TrackioLogger",
    "WandbLogger",
    "batch_metrics",
    "make_logger",
    "rollout_metrics",
]
