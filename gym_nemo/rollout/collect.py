"""``collect_rollouts``: lock-step episodes over a vector env with a text policy, one record per episode."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from gymnasium.vector import VectorEnv

from gym_nemo.policies.base import TextPolicy
from gym_nemo.rollout.engine import EpisodeTrace, VectorDriver
from gym_nemo.rollout.metrics import RolloutMetrics, log_batch, rollout_metrics
from gym_nemo.rollout.records import EpisodeRecord, RecordSink, whole_lines
from gym_nemo.tracking import MetricsLogger


def collect_rollouts(
    envs: VectorEnv,
    policy: TextPolicy,
    num_episodes: int,
    *,
    env_id: str,
    seed: int | None = 0,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_record: Callable[[EpisodeRecord], None] | None = None,
    logger: MetricsLogger | None = None,
    log_step: int = 0,
) -> tuple[list[EpisodeRecord], RolloutMetrics]:
    """Run ``policy`` until ``num_episodes`` episodes have finished; write each as a JSONL line to ``out``.

    The vector env must use ``SAME_STEP`` autoreset (``gym_nemo.make_vec`` does). Episodes still in
    flight when the target is reached are dropped, never written half-done. Lines are appended and
    flushed one at a time, so an interrupted run leaves a valid file of whole episodes.

    ``resume=True`` continues the run in ``out`` (same arguments): a torn last line is cut off, the
    episodes already written count towards ``num_episodes`` and only the rest are played; the records
    returned are the new ones. The resumed run resets its envs with a seed mixed from ``seed`` and the
    number of episodes already written, so it draws a fresh task sequence instead of replaying the killed
    run's first episodes: a kill -9 at any point loses nothing written and writes no episode twice.

    Examples:
        >>> import gym_nemo
        >>> from gym_nemo.envs.code_exec import CodeExecEnv
        >>> from gym_nemo.policies import ReferencePolicy
        >>> from gym_nemo.rollout import collect_rollouts
        >>> envs = gym_nemo.make_vec("nemo/CodeExec-v0", num_envs=2, vectorization_mode="sync")
        >>> policy = ReferencePolicy(CodeExecEnv.load_tasks(), corrupt_rate=0.5, seed=0)
        >>> records, metrics = collect_rollouts(envs, policy, 4, env_id="nemo/CodeExec-v0", progress=False)
        >>> [(r.task_id, r.reward, r.num_turns) for r in records]  # half the answers corrupted, on purpose
        [('HumanEval/139', 1.0, 2), ('HumanEval/77', 0.0, 2), ('HumanEval/104', 0.0, 2), ('HumanEval/83', 1.0, 2)]
        >>> metrics.episodes, metrics.infra_error_rate
        (4, 0.0)
        >>> envs.close()

    ``logger`` and ``log_step``: the batch's metrics go to that logger at that step (as in
    :func:`~gym_nemo.rollout.token_rollout.collect_token_rollouts`).
    """
    n = envs.num_envs
    already = len(whole_lines(Path(out))) if (resume and out is not None) else 0
    target = max(0, num_episodes - already)
    start = time.monotonic()
    if target == 0:
        return [], rollout_metrics([])
    reset_seed = seed
    if already and seed is not None:
        reset_seed = int(np.random.SeedSequence([seed, already]).generate_state(1)[0])
    driver = VectorDriver(envs)
    driver.new_wave(reset_seed)
    for slot in range(n):
        driver.start(slot, EpisodeTrace(env_id, policy.name, seed=seed))
    sink = RecordSink(out, on_record=on_record, total=num_episodes, done=already, progress=progress, desc=env_id)
    with sink:
        while len(sink.records) < target:
            slots = driver.waiting
            traces = driver.traces(slots)
            actions = policy.act([t.observation for t in traces], [t.info for t in traces])
            for slot, record in driver.answer(dict(zip(slots, actions, strict=True))):
                driver.start(slot, EpisodeTrace(env_id, policy.name, seed=seed))  # on the autoreset observation
                if len(sink.records) < target:
                    sink.add(record)
    records = sink.records
    metrics = rollout_metrics(records, duration_s=time.monotonic() - start)
    log_batch(logger, records, metrics, log_step)
    return records, metrics
