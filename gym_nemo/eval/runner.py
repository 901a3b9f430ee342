"""Run a suite: every (task, sample) of every env once, rollouts to JSONL, then scores and the manifest.

Output directory::

    DIR/manifest.json          what determines the scores (see gym_nemo.eval.manifest), and when/where
    DIR/results.json           scores per env and overall (see gym_nemo.eval.metrics), tokens and time
    DIR/rollouts/NAME.jsonl    one EpisodeRecord row per episode (re-scorable: ``gym-nemo reverify DIR``)

Token-level policies (``hf``, ``vllm``) run through the async collector
(:func:`~gym_nemo.rollout.collect_token_rollouts_async`) with one group of ``k`` episodes per task.
Text-level policies (``reference``, ``openai``) run here on worker threads, one env each, because the
vector-env text collector picks tasks at random on autoreset and drops the episodes still running at the
end: a suite needs every task played exactly ``k`` times. Each text episode gets its own seed, derived
from the suite seed, the env, the task and the sample index, so the reference policy's corruption draws
and an OpenAI-compatible server's sampling seeds do not depend on thread timing.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from gym_nemo.core.task import content_hash
from gym_nemo.eval.manifest import build_manifest, package_versions, sandbox_info
from gym_nemo.eval.metrics import env_scores, overall_scores, rounded
from gym_nemo.eval.suite import EnvEntry, Suite, SuiteError
from gym_nemo.policies.factory import POLICY_KINDS, make_policy
from gym_nemo.rollout.engine import EpisodeTrace, failure, play
from gym_nemo.rollout.records import EpisodeRecord
from gym_nemo.tracking import MetricsLogger

#: A text run stops after this many policy calls in a row failed (a server that is down, a wrong URL).
MAX_CONSECUTIVE_POLICY_FAILURES = 5


class PolicyUnavailable(RuntimeError):
    """The policy failed ``MAX_CONSECUTIVE_POLICY_FAILURES`` calls in a row: the run stops (rows so far are kept)."""


@dataclass(frozen=True)
class PolicyConfig:
    """Which policy plays the suite. ``model``: served name (openai), model dir/id (hf, vllm); ``name``: its label."""

    kind: str = "reference"
    model: str | None = None
    base_url: str | None = None
    corrupt_rate: float = 0.3
    device: str = "cpu"
    name: str | None = None  # the leaderboard label; default: the model (or "reference")
    policy_kwargs: dict[str, Any] = field(default_factory=dict)  # hf/vllm: extra constructor kwargs

    def __post_init__(self) -> None:
        if self.kind not in POLICY_KINDS:
            raise ValueError(f"unknown policy {self.kind!r}; available: {', '.join(POLICY_KINDS)}")
        if self.policy_kwargs and self.kind not in ("hf", "vllm"):
            raise ValueError("policy kwargs are for --policy hf and vllm")
        if self.kind != "reference" and not self.model:
            raise ValueError(f"--policy {self.kind} needs --model")

    @property
    def label(self) -> str:
        """The name a leaderboard shows for this policy."""
        if self.name:
            return self.name
        return "reference" if self.kind == "reference" else str(self.model)

    def describe(self) -> dict[str, Any]:
        """The policy's part of the manifest (no credentials)."""
        described: dict[str, Any] = {"kind": self.kind, "label": self.label}
        if self.kind == "reference":
            described["corrupt_rate"] = self.corrupt_rate
        else:
            described["model"] = self.model
        if self.kind == "openai":
            described["endpoint"] = self.base_url
        if self.kind in ("hf", "vllm"):
            described["device"] = self.device
            described["policy_kwargs"] = self.policy_kwargs
        return described


class PinnedTasks(gym.Wrapper):
    """``reset(seed=base + g)`` plays ``task_ids[g]``: the async collector's group seeds pick the suite's tasks."""

    def __init__(self, env: gym.Env, task_ids: Sequence[str], base_seed: int) -> None:
        super().__init__(env)
        self.task_ids, self.base_seed = list(task_ids), base_seed

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        index = (seed or 0) - self.base_seed
        if not 0 <= index < len(self.task_ids):
            last = self.base_seed + len(self.task_ids) - 1
            raise ValueError(f"seed {seed} names no task: the groups' seeds are {self.base_seed}..{last}")
        return self.env.reset(seed=seed, options={**(options or {}), "task_id": self.task_ids[index]})


def episode_seed(suite_seed: int, entry_index: int, task_index: int, sample: int) -> int:
    """The seed of one text episode: independent of scheduling, distinct per (env, task, sample)."""
    return int(np.random.SeedSequence([suite_seed, entry_index, task_index, sample]).generate_state(1)[0])


@dataclass
class _Planned:
    entry: EnvEntry
    index: int
    task_ids: list[str]
    skipped: list[str]
    info: dict[str, Any]
    rows: dict[str, dict[str, Any]]  # task id -> its task row


def _plan(suite: Suite, policy: PolicyConfig) -> tuple[list[_Planned], dict[str, str]]:
    """Build each env once: select its tasks and record its versions and data hashes for the manifest.

    Returns the plans and the ``envs: all`` entries left out, with why (an env that needs arguments, such
    as ``nemo/Remote-v0``'s url, or one with no task the reference policy can play)."""
    planned, left_out = [], {}
    for index, entry in enumerate(suite.envs):
        try:
            env = gym.make(entry.env_id, **entry.kwargs).unwrapped
        except TypeError as exc:
            if not entry.optional:
                raise
            left_out[entry.name] = f"cannot be built without arguments: {exc}"
            continue
        try:
            pool = env.tasks
            task_ids = entry.select_tasks([t.task_id for t in pool], suite.seed)
            skipped: list[str] = []
            if policy.kind == "reference":  # it can only play tasks that have a reference answer
                skipped = [t for t in task_ids if pool.by_id(t).reference is None]
                task_ids = [t for t in task_ids if t not in skipped]
            if not task_ids:
                if not entry.optional:
                    raise SuiteError(f"{entry.name}: no task left to play (none of the selected has a reference)")
                left_out[entry.name] = "none of the selected tasks has a reference answer"
                continue
            rows = {t: dict(pool.by_id(t).row) for t in task_ids}
            versions = dict(env.versions(), tasks=content_hash(rows.values()))
        finally:
            env.close()
        info = {
            "env_id": entry.env_id,
            "kwargs": entry.kwargs,
            "k": entry.k,
            "versions": versions,
            "pool_digest": pool.digest,
            "pool_size": len(pool),
            "tasks_digest": versions["tasks"],
            "task_ids": task_ids,
            "skipped_task_ids": skipped,
            "sandbox": sandbox_info(versions.get("sandbox")),
        }
        planned.append(_Planned(entry, index, task_ids, skipped, info, rows))
    return planned, left_out


class _TextRun:
    """Text-level episodes of one env on worker threads; rows are written by whichever thread finishes."""

    def __init__(self, suite: Suite, plan: _Planned, policy: PolicyConfig, out: Path, progress: bool) -> None:
        self.suite, self.plan, self.policy, self.out = suite, plan, policy, out
        self.jobs: queue.Queue[tuple[int, int]] = queue.Queue()
        for g in range(len(plan.task_ids)):
            for sample in range(plan.entry.k):
                self.jobs.put((g, sample))
        self.total = self.jobs.qsize()
        self.lock = threading.Lock()
        self.tokens: int | None = 0 if policy.kind == "openai" else None
        self.consecutive_failures = 0
        self.error: BaseException | None = None
        self.bar = tqdm(total=self.total, disable=not progress, unit="ep", desc=plan.entry.name)
        self.client = self._openai_client() if policy.kind == "openai" else None

    def _openai_client(self) -> Any:
        from openai import OpenAI

        key = os.environ.get("OPENAI_API_KEY", "EMPTY")
        return OpenAI(base_url=self.policy.base_url, api_key=key, timeout=600.0, max_retries=2)

    def _make_env(self) -> gym.Env:
        entry = self.plan.entry
        return gym.make(entry.env_id, task_ids=self.plan.task_ids, **entry.kwargs)

    def _episode_policy(self, env: gym.Env, seed: int) -> Any:
        sampling = self.suite.sampling
        if self.policy.kind == "reference":
            return make_policy("reference", tasks=env.unwrapped.tasks, corrupt_rate=self.policy.corrupt_rate, seed=seed)
        return make_policy(
            "openai",
            model=str(self.policy.model),
            client=self.client,
            max_tokens=int(sampling.get("max_tokens", 256)),
            temperature=float(sampling.get("temperature", 1.0)),
            top_p=float(sampling.get("top_p", 1.0)),
            seed=seed,
            logprobs=False,
        )

    def run(self) -> None:
        threads = [
            threading.Thread(target=self._work, daemon=True) for _ in range(min(self.suite.concurrency, self.total))
        ]
        with open(self.out, "w", encoding="utf-8") as fh:
            self.fh = fh
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        self.bar.close()
        if self.error is not None:
            raise self.error

    def _work(self) -> None:
        env: gym.Env | None = None
        try:
            while self.error is None:
                try:
                    g, sample = self.jobs.get_nowait()
                except queue.Empty:
                    return
                if env is None:
                    try:
                        env = self._make_env()
                    except Exception as exc:  # e.g. its sandbox could not start: an infra error, not a crash
                        error = failure("env construction", exc)
                        record, env_ok = self._trace(g, sample).record(terminated=False, infra_error=error), True
                if env is not None:
                    record, env_ok = self._play(env, g, sample)
                with self.lock:
                    record.write(self.fh)
                    self.bar.update(1)
                if not env_ok and env is not None:  # its state is unknown after a failure: build a fresh one
                    env.close()
                    env = None
        except BaseException as exc:
            with self.lock:
                self.error = self.error or exc
        finally:
            if env is not None:
                env.close()

    def _trace(self, g: int, sample: int) -> EpisodeTrace:
        task_id = self.plan.task_ids[g]
        return EpisodeTrace(
            self.plan.entry.env_id,
            "reference" if self.policy.kind == "reference" else f"openai:{self.policy.model}",
            seed=episode_seed(self.suite.seed, self.plan.index, g, sample),
            group=g,
            task_id=task_id,
            describe=lambda: (self.plan.rows[task_id], self.plan.info["versions"]),
        )

    def _play(self, env: gym.Env, g: int, sample: int) -> tuple[EpisodeRecord, bool]:
        """Play one episode; returns its record and whether the env is still usable."""
        trace = self._trace(g, sample)
        policy: Any = None

        def act(t: EpisodeTrace) -> str:
            nonlocal policy
            policy = policy or self._episode_policy(env, int(t.seed or 0))
            try:
                action = policy.act([t.observation], [t.info])[0]
            except Exception as exc:
                self._policy_failed(failure("policy call", exc))
                raise
            self._policy_ok(policy)
            return action

        record = play(env, act, trace, seed=trace.seed, options={"task_id": trace.task_id})
        assert record is not None  # nothing aborts a text run's episode
        return record, not trace.env_failed

    def _policy_ok(self, policy: Any) -> None:
        with self.lock:
            self.consecutive_failures = 0
            if self.tokens is not None:
                counts = [o.completion_tokens for o in getattr(policy, "last_outputs", [])]
                self.tokens = None if any(c is None for c in counts) else self.tokens + sum(counts)

    def _policy_failed(self, error: str) -> None:
        with self.lock:
            self.consecutive_failures += 1
            if self.consecutive_failures >= MAX_CONSECUTIVE_POLICY_FAILURES and self.error is None:
                self.error = PolicyUnavailable(
                    f"{self.consecutive_failures} policy calls in a row failed; last: {error}"
                )


def _load_token_policy(policy: PolicyConfig) -> Any:
    device = {"device": policy.device} if policy.kind == "hf" else {}
    return make_policy(policy.kind, model=str(policy.model), **device, **policy.policy_kwargs)


def _run_token(
    suite: Suite, plan: _Planned, token_policy: Any, out: Path, progress: bool, episode_timeout_s: float | None
) -> int:
    """One env through the async collector; returns the policy tokens generated."""
    from gym_nemo.policies import SamplingParams
    from gym_nemo.rollout import collect_token_rollouts_async
    from gym_nemo.wrappers import TokenEnv

    entry = plan.entry
    tokenizer = token_policy.tokenizer

    def env_fn() -> gym.Env:
        text_env = gym.make(entry.env_id, task_ids=plan.task_ids, **entry.kwargs)
        return TokenEnv(PinnedTasks(text_env, plan.task_ids, suite.seed), copy.deepcopy(tokenizer))

    _, metrics = collect_token_rollouts_async(
        env_fn,
        token_policy,
        len(plan.task_ids) * entry.k,
        env_id=entry.env_id,
        group_size=entry.k,
        sampling=SamplingParams(**suite.sampling, seed=suite.seed),
        seed=suite.seed,
        out=out,
        max_in_flight=suite.concurrency,
        episode_timeout_s=episode_timeout_s,
        max_context_tokens=getattr(token_policy, "max_context_tokens", None),
        progress=progress,
    )
    return metrics.policy_tokens


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a rollout file."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def score_run(rows_by_env: dict[str, list[dict[str, Any]]], ks: dict[str, int], seed: int) -> dict[str, Any]:
    """``results["scores"]`` from stored rows: what ``reverify`` recomputes and compares."""
    return rounded(
        {
            "overall": overall_scores(rows_by_env, ks, seed=seed),
            "envs": {name: env_scores(rows, k=ks[name], seed=seed, name=name) for name, rows in rows_by_env.items()},
        }
    )


def run_suite(
    suite: Suite,
    policy: PolicyConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    overwrite: bool = False,
    episode_timeout_s: float | None = None,
    log: Callable[[str], None] = print,
    logger: MetricsLogger | None = None,
    log_step: int = 0,
) -> dict[str, Any]:
    """Play ``suite`` with ``policy``; write rollouts, ``results.json`` and ``manifest.json`` to ``out_dir``.

    Returns the results. ``episode_timeout_s`` bounds token-level episodes (an expired one is an infra
    error). Refuses a directory that already holds a run unless ``overwrite``. ``logger`` (a
    :class:`~gym_nemo.tracking.MetricsLogger`) gets every numeric score at step ``log_step`` as
    ``eval/<env>/<score>`` and ``eval/overall/<score>`` (e.g. an evaluation every N training steps).
    """
    out = Path(out_dir)
    if (out / "manifest.json").exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a run; pass overwrite=True (--overwrite) or another --out")
    (out / "rollouts").mkdir(parents=True, exist_ok=True)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    start = time.monotonic()
    plans, left_out = _plan(suite, policy)
    for name, why in left_out.items():
        log(f"{name}: left out of the run: {why}")
    for plan in plans:
        if plan.skipped:
            log(f"{plan.entry.name}: {len(plan.skipped)} selected task(s) have no reference answer; not played")
    token_policy = _load_token_policy(policy) if policy.kind in ("hf", "vllm") else None
    timing: dict[str, Any] = {}
    rows_by_env: dict[str, list[dict[str, Any]]] = {}
    for plan in plans:
        path = out / "rollouts" / f"{plan.entry.name}.jsonl"
        tick = time.monotonic()
        if token_policy is not None:
            path.unlink(missing_ok=True)
            tokens: int | None = _run_token(suite, plan, token_policy, path, progress, episode_timeout_s)
        else:
            text_run = _TextRun(suite, plan, policy, path, progress)
            text_run.run()
            tokens = text_run.tokens
        seconds = time.monotonic() - tick
        rows_by_env[plan.entry.name] = read_rows(path)
        episodes = len(rows_by_env[plan.entry.name])
        timing[plan.entry.name] = {
            "duration_s": round(seconds, 3),
            "episodes_per_s": round(episodes / seconds, 3) if seconds > 0 else None,
            "policy_tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1) if tokens is not None and seconds > 0 else None,
        }
    duration = time.monotonic() - start
    token_counts = [t["policy_tokens"] for t in timing.values()]
    total_tokens = None if any(t is None for t in token_counts) else sum(token_counts)
    timing["overall"] = {
        "duration_s": round(duration, 3),
        "policy_tokens": total_tokens,
        "tokens_per_s": round(total_tokens / duration, 1) if total_tokens is not None and duration > 0 else None,
    }
    ks = {plan.entry.name: plan.entry.k for plan in plans}
    reproducible = {
        "packages": package_versions(),
        "python": platform.python_version(),
        "suite": {"name": suite.name, "source": Path(suite.source).name, "definition": suite.raw},
        "seed": suite.seed,
        "sampling": suite.sampling,
        "policy": policy.describe(),
        "envs": {plan.entry.name: plan.info for plan in plans},
        "envs_left_out": left_out,
    }
    manifest = build_manifest(
        reproducible,
        {
            "started_at": started_at,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "duration_s": round(duration, 3),
        },
    )
    results = {
        "label": policy.label,
        "suite": suite.name,
        "fingerprint": manifest["fingerprint"],
        "scores": score_run(rows_by_env, ks, suite.seed),
        "timing": timing,
    }
    if logger is not None:
        logger.log(_score_scalars(results["scores"]), step=log_step)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return results


def _score_scalars(scores: dict[str, Any]) -> dict[str, float]:
    """``eval/<env>/<score>`` and ``eval/overall/<score>`` for every numeric score (intervals and lists left out)."""
    flat: dict[str, float] = {}
    for name, values in [("overall", scores["overall"]), *scores["envs"].items()]:
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[f"eval/{name}/{key}"] = float(value)
    return flat


def format_results(results: dict[str, Any]) -> str:
    """A plain-text table of a run's scores (what ``gym-nemo eval`` prints)."""

    def cell(scores: dict[str, Any], metric: str, with_ci: bool = False) -> str:
        value, ci = scores.get(metric), scores.get(f"{metric}_ci")
        if value is None:
            return "-"
        return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if (with_ci and ci) else f"{value:.3f}"

    widths = (24, 3, 9, 24, 7, 7, 12, 6)
    header = ("env", "k", "episodes", "pass@1 [95% CI]", "pass@k", "maj@k", "mean reward", "infra")
    table = [header]
    for name, s in results["scores"]["envs"].items():
        k = s["k"]
        table.append(
            (
                name,
                str(k),
                str(s["episodes"]),
                cell(s, "pass@1", True),
                cell(s, f"pass@{k}"),
                cell(s, f"majority@{k}"),
                cell(s, "mean_reward"),
                f"{s['infra_error_rate']:.3f}",
            )
        )
    o = results["scores"]["overall"]
    overall = ("overall (macro)", "", str(o["episodes"]), cell(o, "pass@1", True), "", "", cell(o, "mean_reward"))
    table.append((*overall, f"{o['infra_error_rate']:.3f}"))
    lines = [
        "".join(f"{c:<{w}}" if i in (0, 3) else f"{c:>{w}} " for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in table
    ]
    t = results["timing"]["overall"]
    tokens = "policy tokens not reported" if t["policy_tokens"] is None else f"{t['policy_tokens']} policy tokens"
    lines.append(f"time {t['duration_s']:.1f} s, {tokens}")
    return "\n".join(lines)


__all__ = [
    "POLICY_KINDS",
    "PinnedTasks",
    "PolicyConfig",
    "PolicyUnavailable",
    "format_results",
    "read_rows",
    "run_suite",
    "score_run",
]
