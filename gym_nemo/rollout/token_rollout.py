"""``collect_token_rollouts``: lock-step token-level episodes with group sampling, for PPO/GRPO loops.

The vector env is ``gym_nemo.make_vec(env_id, n, wrappers=[partial(TokenEnv, tokenizer=tok)])``. Episodes
run in waves of ``num_envs``: every wave resets all sub-envs with per-env seeds that are equal within a
group, so the ``group_size`` envs of a group play the same task (a TextEnv picks its task from its seeded
RNG); then observe batch -> one batched ``generate`` over the active episodes -> step batch, until every
episode of the wave has ended. Sub-envs whose episode ended wait for the wave with an empty action (the
vector env's autoreset episode they are stepping is thrown away). Each episode becomes one
:class:`~gym_nemo.rollout.records.EpisodeRecord` with ``prompt_ids``, ``completion_ids``,
``completion_mask`` (1 = policy token), ``completion_logprobs`` (0.0 for env tokens), ``finish_reasons``
(one per turn), ``group`` and the per-step rewards. The run's :class:`TokenRolloutMetrics` (mean reward,
mixed-reward group rate, truncation and cut-generation rates, infra- and tool-error rates, tokens/s, env
time share) come back with the records; :func:`token_rollout_metrics` computes them for any batch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium.vector import VectorEnv
from tqdm.auto import tqdm

from gym_nemo.policies.token import Generation, SamplingParams, TokenPolicy
from gym_nemo.rollout.records import EpisodeRecord, whole_lines
from gym_nemo.vector import unbatch_info


@dataclass
class TokenRolloutMetrics:
    """Training metrics over a batch of token-level episodes (see :func:`token_rollout_metrics`)."""

    episodes: int = 0
    groups: int = 0
    mean_reward: float = 0.0
    pass_rate: float = 0.0
    mixed_group_rate: float = 0.0
    mean_turns: float = 0.0
    truncation_rate: float = 0.0
    generation_truncation_rate: float = 0.0
    infra_error_rate: float = 0.0
    tool_error_rate: float = 0.0
    policy_tokens: int = 0
    env_tokens: int = 0
    duration_s: float = 0.0
    policy_s: float = 0.0
    env_s: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        """Policy tokens generated per second of wall time."""
        return self.policy_tokens / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def env_time_share(self) -> float:
        """Share of the wall time spent in the envs (reset + step, tools and verifiers included)."""
        return self.env_s / self.duration_s if self.duration_s > 0 else 0.0

    def format(self) -> str:
        return "\n".join(
            [
                f"episodes          {self.episodes}  ({self.groups} groups)",
                f"mean reward       {self.mean_reward:.4f}  (infra errors excluded)",
                f"pass rate         {self.pass_rate:.4f}",
                f"mixed groups      {self.mixed_group_rate:.4f}  (groups whose rewards differ)",
                f"mean turns        {self.mean_turns:.2f}",
                f"truncation rate   {self.truncation_rate:.4f}  (episodes)",
                f"cut generations   {self.generation_truncation_rate:.4f}  (turns without an end-of-turn token)",
                f"infra-error rate  {self.infra_error_rate:.4f}",
                f"tool-error rate   {self.tool_error_rate:.4f}",
                f"tokens            {self.policy_tokens} policy, {self.env_tokens} env",
                f"tokens/s          {self.tokens_per_s:.1f}  ({self.duration_s:.1f} s)",
                f"env time share    {self.env_time_share:.4f}",
            ]
        )


def token_rollout_metrics(
    records: Sequence[EpisodeRecord], *, duration_s: float = 0.0, policy_s: float = 0.0, env_s: float = 0.0
) -> TokenRolloutMetrics:
    """Metrics of a batch of token-level records. ``mixed_group_rate`` is the share of groups whose
    rewards are not all equal (GRPO learns only from those); infra-error episodes are left out of rewards
    and groups. ``tool_error_rate`` is the share of tool messages that report an error."""
    n = len(records)
    if n == 0:
        return TokenRolloutMetrics(duration_s=duration_s, policy_s=policy_s, env_s=env_s)
    scored = [r for r in records if r.infra_error is None]
    groups: dict[Any, list[float]] = {}
    for r in scored:
        groups.setdefault(r.group if r.group is not None else id(r), []).append(r.reward)
    finishes = [f for r in records for f in (r.finish_reasons or [])]
    tools = [m for r in records for m in r.messages if m.get("role") == "tool"]
    masks = [m for r in records for m in (r.completion_mask or [])]
    return TokenRolloutMetrics(
        episodes=n,
        groups=len(groups),
        mean_reward=float(np.mean([r.reward for r in scored])) if scored else 0.0,
        pass_rate=float(np.mean([bool(r.verdict and r.verdict.get("passed")) for r in scored])) if scored else 0.0,
        mixed_group_rate=float(np.mean([len(set(g)) > 1 for g in groups.values()])) if groups else 0.0,
        mean_turns=float(np.mean([r.num_turns for r in records])),
        truncation_rate=sum(r.truncated for r in records) / n,
        generation_truncation_rate=finishes.count("length") / len(finishes) if finishes else 0.0,
        infra_error_rate=(n - len(scored)) / n,
        tool_error_rate=sum(m.get("name") == "error" for m in tools) / len(tools) if tools else 0.0,
        policy_tokens=sum(masks),
        env_tokens=sum(len(r.prompt_ids or []) for r in records) + len(masks) - sum(masks),
        duration_s=duration_s,
        policy_s=policy_s,
        env_s=env_s,
    )


@dataclass
class _TokenEpisode:
    group: int
    started: float
    prompt_ids: list[int]
    active: bool = True
    completion_ids: list[int] = field(default_factory=list)
    completion_mask: list[int] = field(default_factory=list)
    completion_logprobs: list[float] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    step_rewards: list[float] = field(default_factory=list)
    components: list[dict[str, float]] = field(default_factory=list)
    last_info: dict[str, Any] = field(default_factory=dict)

    @property
    def context(self) -> list[int]:
        return self.prompt_ids + self.completion_ids

    def add_generation(self, gen: Generation) -> None:
        """Append the policy's ids (mask 1) with their logprobs and the turn's finish reason."""
        self.completion_ids += gen.token_ids
        self.completion_mask += [1] * len(gen.token_ids)
        self.completion_logprobs += [float(x) for x in gen.logprobs]
        self.finish_reasons.append(gen.finish_reason)

    def add_env_step(self, delta: Sequence[int], reward: float, info: dict[str, Any]) -> None:
        """Append the ids the env added (mask 0, logprob 0.0) and the step's reward and components."""
        delta = [int(t) for t in delta]
        self.completion_ids += delta
        self.completion_mask += [0] * len(delta)
        self.completion_logprobs += [0.0] * len(delta)
        self.step_rewards.append(float(reward))
        self.components.append(dict(info.get("reward_components", {})))
        self.last_info = info


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
) -> tuple[list[EpisodeRecord], TokenRolloutMetrics]:
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
    """
    n = envs.num_envs
    if group_size < 1 or n % group_size or num_episodes % group_size:
        raise ValueError(f"num_envs ({n}) and num_episodes ({num_episodes}) must be multiples of group_size")
    sampling = sampling or SamplingParams()
    groups_per_wave = n // group_size
    total_groups = num_episodes // group_size
    done_per_group = _resume(Path(out)) if (resume and out is not None) else {}
    already = sum(done_per_group.values())
    records: list[EpisodeRecord] = []
    calls = 0
    policy_s = env_s = 0.0
    start = time.monotonic()
    fh = open(out, "a", encoding="utf-8") if out is not None else None  # noqa: SIM115 - closed below
    bar = tqdm(total=num_episodes, disable=not progress, unit="ep", desc=env_id)
    bar.update(sum(min(done_per_group.get(g, 0), group_size) for g in range(total_groups)))

    def finish(episode: _TokenEpisode, info: dict[str, Any], terminated: bool) -> None:
        episode.active = False
        record = _record(env_id, policy.name, seed, episode, info, terminated)
        records.append(record)
        if fh is not None:
            record.write(fh)
        if on_record is not None:
            on_record(record)
        bar.update(1)

    try:
        for wave in range(math.ceil(num_episodes / n)):
            first_group = wave * groups_per_wave
            wanted = [  # slot i plays member i % G of its group, unless the group is over or already has it
                first_group + i // group_size < total_groups
                and i % group_size >= done_per_group.get(first_group + i // group_size, 0)
                for i in range(n)
            ]
            if not any(wanted):
                continue
            seeds = [seed + first_group + i // group_size for i in range(n)]
            tick = time.monotonic()
            observations, reset_info = envs.reset(seed=seeds)
            env_s += time.monotonic() - tick
            now = time.monotonic()
            episodes = [
                _TokenEpisode(first_group + i // group_size, now, [int(t) for t in observations[i]], active=wanted[i])
                for i in range(n)
            ]
            for i, episode in enumerate(episodes):
                episode.last_info = unbatch_info(reset_info, i)
            while any(e.active for e in episodes):
                if max_context_tokens is not None:
                    limit = max_context_tokens - sampling.max_tokens
                    full = [i for i, e in enumerate(episodes) if e.active and len(e.context) > limit]
                    if full:  # the env episode stays open; the wave's reset discards it
                        tasks, versions = envs.get_attr("task"), envs.call("versions")
                        for i in full:
                            info = dict(episodes[i].last_info, versions=versions[i], context_limit=True)
                            finish(episodes[i], dict(info, task_row=dict(tasks[i].row)), terminated=False)
                active = [i for i, e in enumerate(episodes) if e.active]
                if not active:
                    break
                this_sampling = call_sampling(sampling, already, calls)
                calls += 1
                tick = time.monotonic()
                generations = policy.generate([episodes[i].context for i in active], this_sampling)
                policy_s += time.monotonic() - tick
                actions: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * n
                for i, gen in zip(active, generations, strict=True):
                    actions[i] = np.asarray(gen.token_ids, dtype=np.int64)
                    episodes[i].add_generation(gen)
                tick = time.monotonic()
                observations, rewards, terminated, truncated, batched = envs.step(tuple(actions))
                env_s += time.monotonic() - tick
                for i in active:
                    episode = episodes[i]
                    info = unbatch_info(batched, i)
                    done = bool(terminated[i] or truncated[i])
                    delta = info["final_obs"] if done else observations[i]
                    step_info: dict[str, Any] = info["final_info"] if done else info
                    episode.add_env_step(delta, float(rewards[i]), step_info)
                    if done:
                        finish(episode, step_info, bool(terminated[i]))
    finally:
        bar.close()
        if fh is not None:
            fh.close()
    metrics = token_rollout_metrics(records, duration_s=time.monotonic() - start, policy_s=policy_s, env_s=env_s)
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


def _record(
    env_id: str, policy: str, seed: int, episode: _TokenEpisode, info: dict[str, Any], terminated: bool
) -> EpisodeRecord:
    return EpisodeRecord(
        env_id=env_id,
        task_id=str(info["task_id"]),
        task_row=dict(info.get("task_row", {})),
        messages=list(info.get("messages", [])),
        reward=float(sum(episode.step_rewards)),
        step_rewards=episode.step_rewards,
        reward_components=episode.components,
        verdict=info.get("verdict"),
        terminated=terminated,
        truncated=not terminated,
        infra_error=info.get("infra_error"),
        num_turns=int(info.get("turn", len(episode.step_rewards))),
        duration_s=time.monotonic() - episode.started,
        policy=policy,
        seed=seed,
        versions=dict(info.get("versions", {})),
        prompt_ids=episode.prompt_ids,
        completion_ids=episode.completion_ids,
        completion_mask=episode.completion_mask,
        completion_logprobs=episode.completion_logprobs,
        finish_reasons=episode.finish_reasons,
        group=episode.group,
    )
