"""``play_run``: one agent run on one task row through a gateway, as one ``EpisodeRecord``.

The building block of an endpoint rollout source: open a run on the gateway, call the workflow with the run's
base URL (in a thread, bounded by ``timeout_s``), finish the run, and build its trajectory. A workflow that
raises, returns no finite score or runs out of time gives a record with ``infra_error`` (``truncated``, no
reward), never a reward of 0; its calls so far are still in the record.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Mapping
from typing import Any

from gym_nemo.agents.backends import Backend
from gym_nemo.agents.gateway import Gateway
from gym_nemo.agents.trajectory import build_trajectory
from gym_nemo.agents.workflows import Workflow, run_workflow
from gym_nemo.rollout.records import EpisodeRecord


def play_run(
    gateway: Gateway,
    workflow: Workflow,
    row: Mapping[str, Any],
    *,
    task_id: str | None = None,
    backend: Backend | None = None,
    timeout_s: float = 600.0,
    tokenizer: Any | None = None,
    env_id: str = "nemo/AgentWorkflow-v0",
    policy: str = "",
    group: int | None = None,
    seed: int | None = None,
    versions: Mapping[str, str] | None = None,
) -> EpisodeRecord:
    """Run ``workflow(row, base_url)`` on a new gateway run and return its record (see the module docstring).

    ``backend`` overrides the gateway's default for this run; ``tokenizer`` is passed to
    :func:`~gym_nemo.agents.trajectory.build_trajectory`. The run is removed from the gateway afterwards: a late
    call of a timed-out workflow gets ``404``.
    """
    run = gateway.open_run(backend=backend, metadata={"task_id": task_id})
    started = time.monotonic()
    outcome: concurrent.futures.Future[float] = concurrent.futures.Future()

    def play() -> None:
        try:
            outcome.set_result(run_workflow(workflow, row, run.base_url))
        except BaseException as exc:  # reported as the run's infra error, whatever it is
            outcome.set_exception(exc)

    threading.Thread(target=play, name=f"run-{run.run_id}", daemon=True).start()
    reward, error = 0.0, None
    concurrent.futures.wait([outcome], timeout=timeout_s)  # not result(timeout): a workflow's TimeoutError is that
    if not outcome.done():
        error = f"the workflow did not finish within timeout_s={timeout_s:g} s"
    elif outcome.exception() is not None:
        exc = outcome.exception()
        error = f"the workflow failed: {type(exc).__name__}: {exc}"
    else:
        reward = outcome.result()
    gateway.pop_run(run.run_id)
    return build_trajectory(
        list(run.calls),
        reward=reward,
        task_row=row,
        task_id=str(task_id if task_id is not None else row.get("task_id", row.get("id", run.run_id))),
        env_id=env_id,
        infra_error=error,
        policy=policy,
        duration_s=time.monotonic() - started,
        versions=versions,
        group=group,
        seed=seed,
        tokenizer=tokenizer,
    )
