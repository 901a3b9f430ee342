"""``collect_token_rollouts``: lock-step token-level episodes with group sampling, for PPO/GRPO loops.

The vector env is ``gym_nemo.make_vec(env_id, n, wrappers=[partial(TokenEnv, tokenizer=tok)])``. Episodes
run in waves of ``num_envs``: every wave resets all sub-envs with per-env seeds that are equal within a
group, so the ``group_size`` envs of a group play the same task (a TextEnv picks its task from its seeded
RNG); then observe batch -> one batched ``generate`` over the active episodes -> step batch, until every
episode of the wave has ended. Sub-envs whose episode ended wait for the wave with an empty action (the
vector env's autoreset episode they are stepping is thrown away). Each episode becomes one
:class:`~gym_nemo.rollout.records.EpisodeRecord` with ``prompt_ids``, ``completion_ids``,
``completion_mask`` (1 = policy token), ``completion_logprobs`` (0.0 for env tokens), ``finish_reasons``
(one per turn), ``group`` and the per-step rewards. The run's :class:`~gym_nemo.rollout.metrics.RolloutMetrics`
(mean reward, mixed-reward group rate, truncation and cut-generation rates, infra- and tool-error rates,
tokens/s, env time share) come back with the records. Episodes are played by the engine
(:class:`~gym_nemo.rollout.engine.VectorDriver`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from gymnasium.vector import VectorEnv

from gym_nemo.policies.token import SamplingParams, TokenPolicy
from gym_nemo.rollout.engine import EpisodeTrace, VectorDriver
from gym_nemo.rollout.metrics import RolloutMetrics, log_batch, rollout_metrics
from gym_nemo.rollout.records import EpisodeRecord, RecordSink, whole_lines
from gym_nemo.tracking import MetricsLogger


def call_sampling(sampling: SamplingParams, already: int, calls: int) -> SamplingParams:
    """The sampling of the ``calls``-th ``generate`` call: with ``sampling.seed`` set, a seed mixed from it,
    the records a resumed file already holds and ``calls``, so no call (nor a resumed run's) repeats draws."""
    if sampling.seed is None:
        return sampling
    mixed = np.random.SeedSequence([sampling.seed, already, calls]).generate_state(1)[0]
    return dataclasses.replace(sampling, seed=int(mixed))


def collect_token_rollouts(
    envs: VectorEnv,
    policy: TokenPolicy,
    num_episodes: int,
    *,
    env_id: str,
    group_size: int = 1,
    sampling: SamplingParams | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    resume: bool = False,
    max_context_tokens: int | None = None,
    progress: bool = True,
    on_record: Callable[[EpisodeRecord], None] | None = None,
    logger: MetricsLogger | None = None,
    log_step: int = 0,
) -> tuple[list[EpisodeRecord], RolloutMetrics]:
    """Run ``num_episodes`` token-level episodes (``num_episodes / group_size`` groups); see the module doc.

    ``num_envs`` and ``num_episodes`` must be multiples of ``group_size``. Records are appended to ``out``
    (one flushed JSONL line each) in the order episodes finish. With ``sampling.seed`` set, the k-th
    ``generate`` call gets a seed derived from it, k and the number of records a resumed file already
    holds: the run is reproducible and no two calls (nor a resumed run's calls) repeat the same draws.

    ``resume=True`` continues the run in ``out`` (same arguments): a torn last line (a kill mid-write) is
    cut off, each group's episodes already in the file are kept and counted, and only the missing ones
    are played (a group's episodes share its task through the seed, so a resumed group is still G
    rollouts of one task). The records returned are the new ones. A kill -9 at any point loses nothing
    already written and writes nothing twice.

    ``max_context_tokens`` (e.g. the model's context length): an episode whose context plus
    ``sampling.max_tokens`` would not fit is ended before generating, recorded with ``truncated=True`` and
    the turns it had (its stream then ends with the generation prompt the policy never answered).

    Examples:
        A scripted :class:`~gym_nemo.policies.token.TokenPolicy` stands in for a model here: it reads the
        letter from the prompt and answers it four times.

        >>> import gym_nemo
        >>> from gym_nemo.policies import TokenPolicy
        >>> from gym_nemo.rollout import collect_token_rollouts
        >>> from gym_nemo.testing.scripted_policy import ScriptedChatPolicy
        >>> from gym_nemo.testing.tiny_model import build_tokenizer
        >>> from gym_nemo.wrappers import TokenEnv
        >>> tok = build_tokenizer("chatml")
        >>> letters = ScriptedChatPolicy(tok, lambda prompt: prompt.rsplit("the letter ", 1)[1][0] * 4)
        >>> isinstance(letters, TokenPolicy)
        True
        >>> envs = gym_nemo.make_vec("nemo/TargetChar-v0", 4, "sync", wrappers=[lambda env: TokenEnv(env, tok)])
        >>> records, metrics = collect_token_rollouts(
        ...     envs, letters, 4, env_id="nemo/TargetChar-v0", group_size=2, progress=False)
        >>> [(r.group, r.task_id, r.reward) for r in records]  # a group's episodes play one task
        [(0, 'target-char/t', 1.0), (0, 'target-char/t', 1.0), (1, 'target-char/o', 1.0), (1, 'target-char/o', 1.0)]
        >>> record = records[0]
        >>> tok.decode(record.completion_ids), record.completion_mask, record.completion_logprobs
        ('tttt<|im_end|>\\n', [1, 1, 1, 1, 1, 0], [-0.25, -0.25, -0.25, -0.25, -0.25, 0.0])
        >>> metrics.mean_reward, metrics.mixed_group_rate, metrics.policy_tokens
        (1.0, 0.0, 20)
        >>> envs.close()

    ``logger`` (a :class:`~gym_nemo.tracking.MetricsLogger`, e.g. ``make_logger("tensorboard", log_dir=...)``) is
    given the batch's metrics at step ``log_step`` (``rollout/`` keys; see :func:`~gym_nemo.tracking.batch_metrics`).
    """
    n = envs.num_envs
    if group_size < 1 or n % group_size or num_episodes % group_size:
        raise ValueError(f"num_envs ({n}) and num_episodes ({num_episodes}) must be multiples of group_size")
    sampling = sampling or SamplingParams()
    groups_per_wave = n // group_size
    total_groups = num_episodes // group_size
    done_per_group = _resume(Path(out)) if (resume and out is not None) else {}
    already = sum(done_per_group.values())
    calls = 0
    policy_s = env_s = 0.0
    start = time.monotonic()
    done = sum(min(done_per_group.get(g, 0), group_size) for g in range(total_groups))
    sink = RecordSink(out, on_record=on_record, total=num_episodes, done=done, progress=progress, desc=env_id)
    records = sink.records
    limit = None if max_context_tokens is None else max_context_tokens - sampling.max_tokens
    driver = VectorDriver(envs, idle_action=np.zeros(0, dtype=np.int64))
    with sink:
        for wave in range(math.ceil(num_episodes / n)):
            first_group = wave * groups_per_wave
            wanted = [  # slot i plays member i % G of its group, unless the group is over or already has it
                first_group + i // group_size < total_groups
                and i % group_size >= done_per_group.get(first_group + i // group_size, 0)
                for i in range(n)
            ]
            if not any(wanted):
                continue
            tick = time.monotonic()
            driver.new_wave([seed + first_group + i // group_size for i in range(n)])
            env_s += time.monotonic() - tick
            for slot in (i for i in range(n) if wanted[i]):
                trace = EpisodeTrace(env_id, policy.name, seed=seed, group=first_group + slot // group_size)
                record = driver.start(slot, trace, context_limit=limit)
                if record is not None:  # the prompt alone is over the context limit
                    sink.add(record)
            while driver.waiting:
                active = driver.waiting
                this_sampling = call_sampling(sampling, already, calls)
                calls += 1
                tick = time.monotonic()
                generations = policy.generate([t.context for t in driver.traces(active)], this_sampling)
                policy_s += time.monotonic() - tick
                tick = time.monotonic()
                ended = driver.answer(dict(zip(active, generations, strict=True)))
                env_s += time.monotonic() - tick
                for _, record in ended:
                    sink.add(record)
    metrics = rollout_metrics(records, duration_s=time.monotonic() - start, policy_s=policy_s, env_s=env_s)
    log_batch(logger, records, metrics, log_step)
    return records, metrics


def _resume(path: Path) -> dict[int, int]:
    """Episodes per group already in ``path``; cuts off a torn last line so appends start on a fresh one."""
    counts: dict[int, int] = {}
    for line in whole_lines(path):
        row = json.loads(line)
        if row.get("group") is None:
            raise ValueError(f"{path} has rows without a 'group': not a token rollout file; cannot resume")
        counts[int(row["group"])] = counts.get(int(row["group"]), 0) + 1
    return counts
