"""Metric loggers: one small interface (``log(metrics, step)``, ``close()``) over the trackers trainers watch.

Backends (each an optional extra; nothing is imported until a logger is built):

* :class:`TensorBoardLogger` (``[tensorboard]``): scalar event files in ``log_dir``, written with TensorBoard's
  own ``EventFileWriter`` (what ``torch.utils.tensorboard`` uses, without needing torch).
* :class:`WandbLogger` (``[wandb]``): a Weights & Biases run, offline by default (``wandb sync DIR`` uploads it
  later); nothing leaves the machine in offline mode.
* :class:`TrackioLogger` (``[trackio]``): trackio's local SQLite store (``trackio show`` opens its dashboard).
* :class:`JsonlLogger` (no dependency): one JSON line per ``log`` call, for scripts and tests.

:func:`make_logger` builds one or several (``"tensorboard,wandb"``) behind one :class:`MultiLogger`.
Values that are ``None`` or not finite are skipped (a metric undefined for this batch, e.g. a reward mean of a
batch of infra errors); a value that is not a number is a ``TypeError``.

>>> import json, tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> with make_logger("jsonl", log_dir=d) as logger:
...     logger.log({"rollout/reward_mean": 0.5, "rollout/reward_std": None}, step=1)
>>> json.loads((d / "metrics.jsonl").read_text())
{'step': 1, 'metrics': {'rollout/reward_mean': 0.5}}
"""

from __future__ import annotations

import json
import math
import numbers
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

BACKENDS = ("tensorboard", "wandb", "trackio", "jsonl")


@runtime_checkable
class MetricsLogger(Protocol):
    """Writes scalar metrics at a training step; ``close`` flushes and ends the run."""

    def log(self, metrics: Mapping[str, Any], step: int) -> None: ...

    def close(self) -> None: ...


def scalars(metrics: Mapping[str, Any], step: int) -> dict[str, float]:
    """The finite numeric values of ``metrics`` as floats (None and NaN/inf skipped); checks ``step``."""
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    out = {}
    for name, value in metrics.items():
        if value is None:
            continue
        if not isinstance(value, numbers.Real):
            raise TypeError(f"metric {name!r} is not a number: {value!r}")
        if math.isfinite(float(value)):
            out[str(name)] = float(value)
    return out


class _Base:
    """Context-manager plumbing shared by the backends."""

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> _Base:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class JsonlLogger(_Base):
    """Appends ``{"step": ..., "metrics": {...}}`` lines to ``path`` (flushed per call)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        self._fh.write(json.dumps({"step": int(step), "metrics": scalars(metrics, step)}) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


class TensorBoardLogger(_Base):
    """Scalar summaries (``simple_value``) in a TensorBoard event file under ``log_dir``."""

    def __init__(self, log_dir: str | Path, *, flush_secs: float = 10.0) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._writer = EventFileWriter(str(self.log_dir), flush_secs=flush_secs)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        values = [self._summary.Value(tag=k, simple_value=v) for k, v in scalars(metrics, step).items()]
        if values:
            event = self._event(wall_time=time.time(), step=int(step), summary=self._summary(value=values))
            self._writer.add_event(event)

    def close(self) -> None:
        self._writer.close()


class WandbLogger(_Base):
    """A wandb run (``mode="offline"`` by default: files under ``dir/wandb/offline-run-*``, no network)."""

    def __init__(
        self,
        project: str,
        *,
        dir: str | Path,
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        mode: str = "offline",
    ) -> None:
        import wandb

        Path(dir).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=project,
            name=name,
            dir=str(dir),
            config=dict(config or {}),
            mode=mode,
            settings=wandb.Settings(console="off", x_disable_stats=True, silent=True),
        )

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        self.run.log(scalars(metrics, step), step=int(step))

    def close(self) -> None:
        """Finish the run; then, unless another wandb run is active in this process, stop wandb's service: only
        that waits until the run file on disk is complete (``finish`` alone can return before it is flushed)."""
        import wandb

        self.run.finish()
        if wandb.run is None:
            wandb.teardown()


class TrackioLogger(_Base):
    """A trackio run in its local store (``dir``: the store's folder, default trackio's own, ``$TRACKIO_DIR``).

    trackio reads its folder once, when first imported: a ``dir`` that differs from the one an already imported
    trackio uses is an error (set ``TRACKIO_DIR`` before importing trackio instead).
    """

    def __init__(
        self,
        project: str,
        *,
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        dir: str | Path | None = None,
    ) -> None:
        if dir is not None:
            wanted = Path(dir).resolve()
            if "trackio" in sys.modules:
                from trackio.utils import TRACKIO_DIR

                if Path(TRACKIO_DIR).resolve() != wanted:
                    raise ValueError(f"trackio is already imported with its store at {TRACKIO_DIR}, not {wanted}")
            else:
                os.environ["TRACKIO_DIR"] = str(wanted)
        import trackio

        self.run = trackio.init(
            project=project, name=name, config=dict(config or {}), embed=False, auto_log_cpu=False, auto_log_gpu=False
        )

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        self.run.log(scalars(metrics, step), step=int(step))

    def close(self) -> None:
        self.run.finish()


class MultiLogger(_Base):
    """Fans ``log`` and ``close`` out to several loggers (every one is closed even if one fails)."""

    def __init__(self, loggers: Sequence[MetricsLogger]) -> None:
        self.loggers = list(loggers)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        for logger in self.loggers:
            logger.log(metrics, step)

    def close(self) -> None:
        errors = []
        for logger in self.loggers:
            try:
                logger.close()
            except Exception as exc:  # close the others first, then report
                errors.append(exc)
        if errors:
            raise errors[0]


def make_logger(
    backends: str | Sequence[str],
    *,
    log_dir: str | Path,
    project: str = "gym_nemo",
    run_name: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> MultiLogger:
    """Loggers named in ``backends`` (a list or a comma-separated string of :data:`BACKENDS`), writing under
    ``log_dir``: ``tensorboard/`` event files, ``wandb/`` offline runs, ``trackio/`` store, ``metrics.jsonl``."""
    names = [b.strip() for b in backends.split(",")] if isinstance(backends, str) else [str(b) for b in backends]
    names = [n for n in names if n]
    unknown = sorted(set(names) - set(BACKENDS))
    if unknown:
        raise ValueError(f"unknown logger backend(s) {unknown}; choose from {list(BACKENDS)}")
    log_dir = Path(log_dir)
    loggers: list[MetricsLogger] = []
    try:
        for name in dict.fromkeys(names):
            if name == "tensorboard":
                loggers.append(TensorBoardLogger(log_dir / "tensorboard" / (run_name or "")))
            elif name == "wandb":
                loggers.append(WandbLogger(project, dir=log_dir, name=run_name, config=config))
            elif name == "trackio":
                loggers.append(TrackioLogger(project, name=run_name, config=config, dir=log_dir / "trackio"))
            else:
                loggers.append(JsonlLogger(log_dir / "metrics.jsonl"))
    except BaseException:
        MultiLogger(loggers).close()
        raise
    return MultiLogger(loggers)
