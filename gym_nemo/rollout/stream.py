"""``stream_token_rollouts``: finished groups while generation goes on, with bounded staleness.

The async collector returns when its batch is done. A trainer that wants to train while the next batch is
being generated (PipelineRL, AReaL, prime-rl, NeMo RL's async GRPO) iterates a :class:`RolloutStream`
instead: the same workers, continuous batching, deadlines and records as
:func:`~gym_nemo.rollout.collect_token_rollouts_async`, but open-ended, handing out each group the moment
its last episode ends, and taking weight updates in between::

    with stream_token_rollouts(env_fn, policy, env_id=..., group_size=8, batch_groups=4, max_staleness=1) as stream:
        batch = []
        for group in stream:                  # a list of group_size EpisodeRecords of one task
            batch.append(group)
            if len(batch) == 4:
                weights = train_step(batch)   # generation goes on meanwhile
                stream.update_weights(weights, version=stream.version + 1)
                batch = []

Rules, each chosen so that nothing is silently biased or lost:

* **Staleness is bounded by holding back, never by dropping.** Groups are numbered in the order they start.
  Group ``k`` (a member of training batch ``k // batch_groups``) starts only once the policy's version is at
  least ``k // batch_groups - max_staleness``: with ``max_staleness=0`` the loop is synchronous (the next
  batch starts after the update), with 1 one batch is generated ahead. Finished groups are always handed
  out, whatever their age, so slow (often hard) tasks are not filtered out of training. While the bound holds
  groups back and nothing is left in flight, ``next()`` waits for a weight update (from another thread).
* **Versions per turn.** Each generation records the policy version that sampled it: a record's
  ``policy_versions`` has one entry per turn, so an episode that crossed a weight update shows where.
  :func:`staleness` gives a group's age against the current version.
* **Whole groups.** Records are written to ``out`` group by group when the group is handed out (one flushed
  line each), so the file holds exactly the groups delivered. ``resume=True`` keeps them, plays only the
  missing members of a group a kill cut short (it is then delivered whole), and numbers new groups after
  the last one: a kill loses and duplicates no group.
* **Failures.** An episode past ``episode_timeout_s`` or whose env raised is an ``infra_error`` record in its
  group (truncated, never a reward); a policy exception ends the stream with that exception.

``policy.update_weights(weights, version)`` is called under the lock the policy thread holds while
generating, so an update lands between two ``generate`` calls and applies to the next.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import gymnasium as gym

from gym_nemo.policies.token import SamplingParams, TokenPolicy
from gym_nemo.rollout.async_collector import _Collector, _Run
from gym_nemo.rollout.metrics import log_batch, rollout_metrics
from gym_nemo.rollout.records import EpisodeRecord, whole_lines
from gym_nemo.tracking import MetricsLogger


def staleness(group: Sequence[EpisodeRecord], version: int) -> int:
    """How many versions behind ``version`` the oldest turn of the group was sampled (0 if none recorded)."""
    versions = [v for r in group for v in (r.policy_versions or [])]
    return version - min(versions) if versions else 0


class RolloutStream:
    """An open-ended stream of finished groups (see the module docstring); iterate it, update weights, close it.

    ``batch_groups`` groups make one training batch (the unit of the staleness bound); ``num_groups`` ends the
    stream after that many groups (None: until closed). The other arguments are those of
    :func:`~gym_nemo.rollout.collect_token_rollouts_async`; group ``g`` resets with seed ``seed + g``. With a
    ``logger``, each training batch (``batch_groups`` groups, in delivery order) is logged at step = its index,
    staleness against the policy's version at delivery included.
    """

    def __init__(
        self,
        env_fn: Callable[[], gym.Env],
        policy: TokenPolicy,
        *,
        env_id: str,
        group_size: int = 1,
        batch_groups: int = 1,
        max_staleness: int = 1,
        num_groups: int | None = None,
        sampling: SamplingParams | None = None,
        seed: int = 0,
        out: str | Path | None = None,
        resume: bool = False,
        max_in_flight: int = 8,
        max_batch_size: int = 64,
        batch_wait_s: float = 0.005,
        episode_timeout_s: float | None = None,
        max_context_tokens: int | None = None,
        logger: MetricsLogger | None = None,
    ) -> None:
        if max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0, got {max_staleness}")
        if group_size < 1 or batch_groups < 1 or max_in_flight < 1:
            raise ValueError("need group_size >= 1, batch_groups >= 1, max_in_flight >= 1")
        if num_groups is not None and num_groups < 0:
            raise ValueError(f"num_groups must be >= 0 or None, got {num_groups}")
        self.policy, self.group_size, self.batch_groups = policy, group_size, batch_groups
        self.max_staleness, self.num_groups = max_staleness, num_groups
        self._held = _resume_groups(Path(out), group_size) if (resume and out is not None) else {}
        sampling = sampling or SamplingParams()
        self._run = _Run(
            env_fn,
            policy,
            sampling,
            env_id=env_id,
            seed=seed,
            already=sum(group_size if g is None else len(g) for g in self._held.values()),
            context_limit=None if max_context_tokens is None else max_context_tokens - sampling.max_tokens,
            max_batch_size=max_batch_size,
            batch_wait_s=batch_wait_s,
        )
        self._run.track_versions = True
        done = {g for g, records in self._held.items() if records is None}
        # Groups to play, in order: those a kill cut short (partial in the file, or started and never delivered:
        # the numbers below the last one that are missing), then new ones.
        replay = sorted(set(range(max(self._held, default=-1) + 1)) - done)
        self._order = itertools.chain(replay, itertools.count(max(self._held, default=-1) + 1))
        self._started = len(done)  # groups counted towards the staleness bound (delivered ones included)
        self._pending: dict[int, list[EpisodeRecord]] = {}
        self._delivered = len(done)
        self._fh: IO[str] | None = open(out, "a", encoding="utf-8") if out is not None else None  # noqa: SIM115
        self._collector = _Collector(self._run, max_in_flight=max_in_flight, episode_timeout_s=episode_timeout_s)
        self._closed = False
        self.logger = logger
        self._batch: list[EpisodeRecord] = []
        self._batch_started = time.monotonic()

    # ------------------------------------------------------------------ weights
    @property
    def version(self) -> int:
        """The policy's current weights version (0 for a policy that has none)."""
        return int(getattr(self.policy, "version", 0) or 0)

    def update_weights(self, weights: Any, version: int) -> None:
        """``policy.update_weights(weights, version)`` between two generate calls (the policy thread waits)."""
        update = getattr(self.policy, "update_weights", None)
        if update is None:
            raise TypeError(f"{type(self.policy).__name__} has no update_weights(weights, version)")
        with self._run.policy_lock:
            update(weights, version)

    # ------------------------------------------------------------------ groups
    def _admit(self) -> None:
        """Start the groups the staleness bound allows (and the run's size, if it has one)."""
        while self.num_groups is None or self._started < self.num_groups:
            if self._started // self.batch_groups > self.version + self.max_staleness:
                return
            group = next(self._order)
            members = self.group_size - len(self._pending.setdefault(group, list(self._held.get(group) or [])))
            for _ in range(members):
                self._run.jobs.put(group)
            self._started += 1

    def __iter__(self) -> Iterator[list[EpisodeRecord]]:
        return self

    def __next__(self) -> list[EpisodeRecord]:
        if self._closed or (self.num_groups is not None and self._delivered >= self.num_groups):
            raise StopIteration
        while True:
            self._admit()
            ready = [g for g, members in self._pending.items() if len(members) >= self.group_size]
            if ready:
                return self._deliver(min(ready))
            record = self._collector.poll()
            if record is not None:
                self._pending[int(record.group or 0)].append(record)

    def _deliver(self, group: int) -> list[EpisodeRecord]:
        records = self._pending.pop(group)
        if self._fh is not None:  # the records a resumed run found in the file are there already
            for record in records[len(self._held.get(group) or []) :]:
                record.write(self._fh)
        self._delivered += 1
        self._log(records)
        return records

    def _log(self, group: list[EpisodeRecord]) -> None:
        """Every ``batch_groups`` delivered groups, their metrics (staleness included) go to the logger."""
        if self.logger is None:
            return
        self._batch += group
        if self._delivered % self.batch_groups:
            return
        metrics = rollout_metrics(self._batch, duration_s=time.monotonic() - self._batch_started)
        log_batch(
            self.logger, self._batch, metrics, self._delivered // self.batch_groups - 1, current_version=self.version
        )
        self._batch, self._batch_started = [], time.monotonic()

    def close(self) -> None:
        """Stop generating (episodes in flight are dropped, never written half-done) and close the file."""
        if self._closed:
            return
        self._closed = True
        self._collector.close()
        if self._fh is not None:
            self._fh.close()

    def __enter__(self) -> RolloutStream:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


def _resume_groups(path: Path, group_size: int) -> dict[int, list[EpisodeRecord] | None]:
    """The groups already in ``path``: ``None`` for a whole (delivered) group, its records for a partial one
    (a kill while its lines were written). A torn last line is cut off."""
    rows: dict[int, list[dict[str, Any]]] = {}
    for line in whole_lines(path):
        row = json.loads(line)
        if row.get("group") is None:
            raise ValueError(f"{path} has rows without a 'group': not a rollout stream file; cannot resume")
        rows.setdefault(int(row["group"]), []).append(row)
    return {g: None if len(r) >= group_size else [_record(row) for row in r] for g, r in rows.items()}


def _record(row: dict[str, Any]) -> EpisodeRecord:
    """An ``EpisodeRecord`` back from its JSONL row (the task row's own fields go back under ``task_row``)."""
    names = set(EpisodeRecord.__dataclass_fields__) - {"task_row"}
    return EpisodeRecord(
        task_row={k: v for k, v in row.items() if k not in names}, **{k: row[k] for k in names if k in row}
    )


#: ``stream_token_rollouts(env_fn, policy, env_id=..., group_size=G, batch_groups=B, max_staleness=1, ...)``: the
#: collector's name for building a :class:`RolloutStream`.
stream_token_rollouts = RolloutStream
