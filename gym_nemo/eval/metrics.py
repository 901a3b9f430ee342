"""Scores of an evaluation run: mean reward, pass@1, unbiased pass@k, majority@k, bootstrap CIs.

Every score is computed over *tasks*: the episodes of a task are its samples. Episodes that ended in an
infrastructure error (sandbox or verifier down, a failed policy call) say nothing about the model: they
are left out of every score and counted in ``infra_error_rate`` beside it. Confidence intervals are 95%
percentile intervals of a task-level bootstrap (tasks resampled with replacement; the samples of a task
stay together), seeded, so a run's intervals are reproducible to the digit.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

BOOTSTRAP_RESAMPLES = 1000
CONFIDENCE = 0.95


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one task with ``n`` samples of which ``c`` passed (Chen et al. 2021, "Evaluating
    Large Language Models Trained on Code"): ``1 - C(n-c, k) / C(n, k)``, computed as a stable product.

    Examples:
        >>> from gym_nemo.eval import pass_at_k
        >>> round(pass_at_k(n=10, c=3, k=1), 4)  # one draw: 3 of 10 pass
        0.3
        >>> round(pass_at_k(n=10, c=3, k=5), 4)  # 1 - C(7, 5) / C(10, 5)
        0.9167
        >>> pass_at_k(n=4, c=0, k=4), pass_at_k(n=4, c=1, k=4)
        (0.0, 1.0)
    """
    for value, what in ((n, "n"), (c, "c"), (k, "k")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{what} must be an int, got {value!r}")
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


@dataclass
class TaskSamples:
    """The scored samples of one task: rewards, pass flags and (where the verifier extracts one) answers."""

    task_id: str
    rewards: list[float] = field(default_factory=list)
    passed: list[bool] = field(default_factory=list)
    answers: list[str | None] = field(default_factory=list)
    infra_errors: int = 0

    @property
    def n(self) -> int:
        return len(self.rewards)

    @property
    def c(self) -> int:
        return sum(self.passed)

    def majority_passed(self) -> bool:
        """Whether the most frequent extracted answer passed (ties: the smallest answer string; no answer: no)."""
        counts = Counter(a for a in self.answers if a is not None)
        if not counts:
            return False
        top = max(counts.values())
        answer = min(a for a, count in counts.items() if count == top)
        return any(p for a, p in zip(self.answers, self.passed, strict=True) if a == answer)


def extracted_answer(verdict: Mapping[str, Any] | None) -> str | None:
    """The answer a verifier compared (Math, MCQA, ReasoningGym record ``details.extracted_answer``), else None."""
    details = (verdict or {}).get("details") or {}
    answer = details.get("extracted_answer")
    return None if answer is None else str(answer).strip()


def has_comparable_answers(rows: Sequence[Mapping[str, Any]]) -> bool:
    """True when the env's verifier reports the answer it compared, so majority voting is meaningful."""
    verdicts = [r.get("verdict") for r in rows if r.get("verdict") and not r.get("infra_error")]
    return bool(verdicts) and all("extracted_answer" in (v.get("details") or {}) for v in verdicts)


def group_by_task(rows: Sequence[Mapping[str, Any]]) -> list[TaskSamples]:
    """Rollout rows grouped by ``task_id`` (in first-seen order of sorted ids, so the result is order-free)."""
    tasks: dict[str, TaskSamples] = {}
    for row in rows:
        task = tasks.setdefault(str(row["task_id"]), TaskSamples(str(row["task_id"])))
        if row.get("infra_error"):
            task.infra_errors += 1
            continue
        verdict = row.get("verdict") or {}
        task.rewards.append(float(row["reward"]))
        task.passed.append(bool(verdict.get("passed")))
        task.answers.append(extracted_answer(verdict))
    # Sort samples within a task too: finishing order is timing-dependent, scores must not be.
    for task in tasks.values():
        order = sorted(
            range(task.n),
            key=lambda i: (task.rewards[i], task.passed[i], task.answers[i] is None, task.answers[i] or ""),
        )
        task.rewards = [task.rewards[i] for i in order]
        task.passed = [task.passed[i] for i in order]
        task.answers = [task.answers[i] for i in order]
    return [tasks[t] for t in sorted(tasks)]


def _task_scores(tasks: Sequence[TaskSamples], k: int, majority: bool) -> dict[str, np.ndarray]:
    """Per-task values whose mean over tasks is each score (tasks without a scored sample are excluded)."""
    scored = [t for t in tasks if t.n > 0]
    values: dict[str, np.ndarray] = {
        "mean_reward": np.array([np.mean(t.rewards) for t in scored]),
        "pass@1": np.array([t.c / t.n for t in scored]),
    }
    for j in range(2, k + 1):
        values[f"pass@{j}"] = np.array([pass_at_k(t.n, t.c, j) if t.n >= j else np.nan for t in scored])
    if majority:
        values[f"majority@{k}"] = np.array([float(t.majority_passed()) for t in scored])
    return values


def _resampled_means(per_task: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Mean of each bootstrap resample, ignoring tasks without a value (NaN: fewer than k scored samples)."""
    with warnings.catch_warnings():  # a resample of only such tasks has no mean: NaN, skipped by the interval
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(per_task[indices], axis=1)


def _interval(samples: np.ndarray) -> list[float]:
    lo, hi = np.nanpercentile(samples, [100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2])
    return [float(lo), float(hi)]


def bootstrap_seed(seed: int, name: str) -> np.random.Generator:
    """The bootstrap's generator for one env (or ``"overall"``): seeded by the run's seed and the name."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def env_scores(rows: Sequence[Mapping[str, Any]], *, k: int, seed: int, name: str) -> dict[str, Any]:
    """Scores of one env's rollout rows (see the module docstring). ``k`` is the suite's samples per task."""
    tasks = group_by_task(rows)
    episodes = len(rows)
    infra = sum(t.infra_errors for t in tasks)
    majority = has_comparable_answers(rows)
    values = _task_scores(tasks, k, majority)
    n_scored = len(values["pass@1"])
    result: dict[str, Any] = {
        "episodes": episodes,
        "scored_episodes": episodes - infra,
        "tasks": len(tasks),
        "scored_tasks": n_scored,
        "k": k,
        "infra_errors": infra,
        "infra_error_rate": infra / episodes if episodes else 0.0,
        "mean_turns": float(np.mean([r.get("num_turns", 0) for r in rows])) if rows else 0.0,
        "truncation_rate": float(np.mean([bool(r.get("truncated")) for r in rows])) if rows else 0.0,
        "majority_comparable": majority,
    }
    rng = bootstrap_seed(seed, name)
    indices = rng.integers(n_scored, size=(BOOTSTRAP_RESAMPLES, n_scored)) if n_scored else None
    for metric, per_task in values.items():
        if n_scored == 0 or np.all(np.isnan(per_task)):
            result[metric], result[f"{metric}_ci"] = None, None
            continue
        result[metric] = float(np.nanmean(per_task))
        result[f"{metric}_ci"] = _interval(_resampled_means(per_task, indices))
    result["pass_at_k"] = {str(j): result.get(f"pass@{j}") for j in range(1, k + 1)}
    return result


def overall_scores(
    per_env_rows: Mapping[str, Sequence[Mapping[str, Any]]], ks: Mapping[str, int], *, seed: int
) -> dict:
    """Macro averages over envs (each env weighs the same, whatever its task count), with a stratified
    bootstrap (tasks resampled within each env). pass@j is averaged over envs with ``k >= j``."""
    per_env = {
        name: _task_scores(group_by_task(rows), ks[name], has_comparable_answers(rows))
        for name, rows in per_env_rows.items()
    }
    per_env = {name: v for name, v in per_env.items() if len(v["pass@1"])}
    episodes = sum(len(rows) for rows in per_env_rows.values())
    infra = sum(bool(r.get("infra_error")) for rows in per_env_rows.values() for r in rows)
    result: dict[str, Any] = {
        "envs": len(per_env_rows),
        "scored_envs": len(per_env),
        "episodes": episodes,
        "infra_errors": infra,
        "infra_error_rate": infra / episodes if episodes else 0.0,
    }
    rng = bootstrap_seed(seed, "overall")
    draws = {
        name: rng.integers(len(v["pass@1"]), size=(BOOTSTRAP_RESAMPLES, len(v["pass@1"])))
        for name, v in per_env.items()
    }
    max_k = max(ks.values(), default=1)
    for metric in ["mean_reward", *(f"pass@{j}" for j in range(1, max_k + 1))]:
        envs = [name for name, v in per_env.items() if metric in v and not np.all(np.isnan(v[metric]))]
        if not envs:
            result[metric], result[f"{metric}_ci"] = None, None
            continue
        result[metric] = float(np.mean([np.nanmean(per_env[e][metric]) for e in envs]))
        boot = np.mean([_resampled_means(per_env[e][metric], draws[e]) for e in envs], axis=0)
        result[f"{metric}_ci"] = _interval(boot)
    result["pass_at_k"] = {str(j): result.get(f"pass@{j}") for j in range(1, max_k + 1)}
    return result


def rounded(value: Any, digits: int = 6) -> Any:
    """Floats rounded for JSON (``results.json`` keeps 6 digits; the digits past that are bootstrap noise)."""
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value
