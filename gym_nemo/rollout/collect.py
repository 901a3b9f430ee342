"""``collect_rollouts``: lock-step episodes over a vector env with a text policy, one record per episode."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gymnasium.vector import VectorEnv
from tqdm.auto import tqdm

from gym_nemo.policies.base import TextPolicy
from gym_nemo.rollout.records import EpisodeRecord, whole_lines
from gym_nemo.vector import unbatch_info


@dataclass
class RolloutSummary:
    """Aggregate figures over the collected episodes."""

    episodes: int = 0
    mean_reward: float = 0.0
    pass_rate: float = 0.0
    mean_turns: float = 0.0
    truncation_rate: float = 0.0
    infra_error_rate: float = 0.0
    duration_s: float = 0.0
    rewards: list[float] = field(default_factory=list, repr=False)

    @property
    def episodes_per_s(self) -> float:
        return self.episodes / self.duration_s if self.duration_s > 0 else 0.0

    def format(self) -> str:
        return "\n".join(
            [
                f"episodes          {self.episodes}",
                f"mean reward       {self.mean_reward:.4f}  (infra errors excluded)",
                f"pass rate         {self.pass_rate:.4f}",
                f"mean turns        {self.mean_turns:.2f}",
                f"truncation rate   {self.truncation_rate:.4f}",
                f"infra-error rate  {self.infra_error_rate:.4f}",
                f"episodes/s        {self.episodes_per_s:.2f}  ({self.duration_s:.1f} s)",
            ]
        )


@dataclass
class _Episode:
    started: float
    step_rewards: list[float] = field(default_factory=list)
    components: list[dict[str, float]] = field(default_factory=list)


def summarize(records: list[EpisodeRecord], duration_s: float) -> RolloutSummary:
    n = len(records)
    if n == 0:
        return RolloutSummary(duration_s=duration_s)
    scored = [r for r in records if r.infra_error is None]
    rewards = [r.reward for r in scored]
    return RolloutSummary(
        episodes=n,
        mean_reward=float(np.mean(rewards)) if rewards else 0.0,
        pass_rate=float(np.mean([bool(r.verdict and r.verdict.get("passed")) for r in scored])) if scored else 0.0,
        mean_turns=float(np.mean([r.num_turns for r in records])),
        truncation_rate=sum(r.truncated for r in records) / n,
        infra_error_rate=(n - len(scored)) / n,
        duration_s=duration_s,
        rewards=rewards,
    )


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
) -> tuple[list[EpisodeRecord], RolloutSummary]:
    """Run ``policy`` until ``num_episodes`` episodes have finished; write each as a JSONL line to ``out``.

    The vector env must use ``SAME_STEP`` autoreset (``gym_nemo.make_vec`` does). Episodes still in
    flight when the target is reached are dropped, never written half-done. Lines are appended and
    flushed one at a time, so an interrupted run leaves a valid file of whole episodes.

    ``resume=True`` continues the run in ``out`` (same arguments): a torn last line is cut off, the
    episodes already written count towards ``num_episodes`` and only the rest are played; the records
    returned are the new ones. The resumed run resets its envs with a seed mixed from ``seed`` and the
    number of episodes already written, so it draws a fresh task sequence instead of replaying the killed
    run's first episodes: a kill -9 at any point loses nothing written and writes no episode twice.
    """
    n = envs.num_envs
    already = len(whole_lines(Path(out))) if (resume and out is not None) else 0
    target = max(0, num_episodes - already)
    records: list[EpisodeRecord] = []
    start = time.monotonic()
    if target == 0:
        return records, summarize(records, 0.0)
    reset_seed = seed
    if already and seed is not None:
        reset_seed = int(np.random.SeedSequence([seed, already]).generate_state(1)[0])
    observations, batched = envs.reset(seed=reset_seed)
    infos = [unbatch_info(batched, i) for i in range(n)]
    episodes = [_Episode(time.monotonic()) for _ in range(n)]
    fh = open(out, "a", encoding="utf-8") if out is not None else None  # noqa: SIM115 - closed below
    bar = tqdm(total=num_episodes, initial=already, disable=not progress, unit="ep", desc=env_id)
    try:
        while len(records) < target:
            actions = policy.act(list(observations), infos)
            observations, rewards, terminated, truncated, batched = envs.step(actions)
            infos = [unbatch_info(batched, i) for i in range(n)]
            for i in range(n):
                step_info = infos[i]["final_info"] if (terminated[i] or truncated[i]) else infos[i]
                episodes[i].step_rewards.append(float(rewards[i]))
                episodes[i].components.append(dict(step_info.get("reward_components", {})))
                if not (terminated[i] or truncated[i]) or len(records) >= target:
                    continue
                record = EpisodeRecord(
                    env_id=env_id,
                    task_id=str(step_info["task_id"]),
                    task_row=dict(step_info.get("task_row", {})),
                    messages=list(step_info.get("messages", [])),
                    reward=float(sum(episodes[i].step_rewards)),
                    step_rewards=episodes[i].step_rewards,
                    reward_components=episodes[i].components,
                    verdict=step_info.get("verdict"),
                    terminated=bool(terminated[i]),
                    truncated=bool(truncated[i]),
                    infra_error=step_info.get("infra_error"),
                    num_turns=int(step_info.get("turn", len(episodes[i].step_rewards))),
                    duration_s=time.monotonic() - episodes[i].started,
                    policy=policy.name,
                    seed=seed,
                    versions=dict(step_info.get("versions", {})),
                )
                records.append(record)
                if fh is not None:
                    record.write(fh)
                if on_record is not None:
                    on_record(record)
                episodes[i] = _Episode(time.monotonic())
                bar.update(1)
    finally:
        bar.close()
        if fh is not None:
            fh.close()
    return records, summarize(records, time.monotonic() - start)
