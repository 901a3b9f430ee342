"""``collect_agent_rollouts``: an agent workflow (callable, import path or ``/run`` endpoint) as a rollout source.

Each task row is run ``group_size`` times through one capturing :class:`~gym_nemo.agents.gateway.Gateway`: a run
is opened, the workflow is called with the run's base URL, and when it returns its calls become one token-exact
:class:`~gym_nemo.rollout.records.EpisodeRecord` (:func:`~gym_nemo.agents.episodes.play_run`). ``concurrency``
runs go on at once. Records are appended to ``out`` as they finish (one flushed line each) with ``group`` = the
row's index; ``resume=True`` keeps the whole lines of a killed run and plays only the samples each group lacks,
so a kill loses nothing written and writes nothing twice. A workflow that fails or times out is an
``infra_error`` record, never a reward 0. The metrics are :class:`~gym_nemo.rollout.metrics.RolloutMetrics`, the
same as ``gym-nemo rollout`` prints.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gym_nemo.agents.episodes import play_run
from gym_nemo.agents.gateway import Gateway
from gym_nemo.agents.workflows import Workflow
from gym_nemo.rollout.metrics import RolloutMetrics, rollout_metrics
from gym_nemo.rollout.records import EpisodeRecord, whole_lines


def _done_per_group(out: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    for line in whole_lines(out):
        group = json.loads(line).get("group")
        if group is None:
            raise ValueError(f"{out} has rows without a 'group': not an agent rollout file; cannot resume")
        counts[int(group)] = counts.get(int(group), 0) + 1
    return counts


def collect_agent_rollouts(
    gateway: Gateway,
    workflow: Workflow,
    rows: Sequence[Mapping[str, Any]],
    *,
    group_size: int = 1,
    concurrency: int = 8,
    timeout_s: float = 600.0,
    out: str | Path | None = None,
    resume: bool = False,
    tokenizer: Any | None = None,
    policy: str = "",
    env_id: str = "nemo/AgentWorkflow-v0",
    on_record: Callable[[EpisodeRecord], None] | None = None,
) -> tuple[list[EpisodeRecord], RolloutMetrics]:
    """Run every row ``group_size`` times through ``gateway`` (see the module docstring); the new records and
    their metrics."""
    if group_size < 1 or concurrency < 1 or timeout_s <= 0:
        raise ValueError("need group_size >= 1, concurrency >= 1, timeout_s > 0")
    done = _done_per_group(Path(out)) if (resume and out is not None) else {}
    jobs = [(g, s) for g in range(len(rows)) for s in range(done.get(g, 0), group_size)]
    records: list[EpisodeRecord] = []
    start = time.monotonic()

    def one(job: tuple[int, int]) -> EpisodeRecord:
        group, sample = job
        row = rows[group]
        task_id = str(row.get("task_id", row.get("id", f"row-{group}")))
        return play_run(
            gateway,
            workflow,
            row,
            task_id=task_id,
            timeout_s=timeout_s,
            tokenizer=tokenizer,
            env_id=env_id,
            policy=policy,
            group=group,
            seed=sample,
        )

    fh = open(out, "a", encoding="utf-8") if out is not None else None  # noqa: SIM115 - closed below
    try:
        with concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="agent-run") as pool:
            for future in concurrent.futures.as_completed([pool.submit(one, job) for job in jobs]):
                record = future.result()
                records.append(record)
                if fh is not None:
                    record.write(fh)
                if on_record is not None:
                    on_record(record)
    finally:
        if fh is not None:
            fh.close()
    return records, rollout_metrics(records, duration_s=time.monotonic() - start)
