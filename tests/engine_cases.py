"""Fixed-seed episodes through every way of playing them, for the episode engine's golden test.

Each case plays a few episodes through one public entry point (the lock-step text and token collectors, the async
collector, eval's runner, TRL's ``EnvRollout``, the async single-episode loop) and returns what that entry point
hands its user, with wall-clock timings removed. ``tests/data/engine_golden.json`` holds what the code before the
one-engine refactor (commit 36553ad) returned for the same cases; ``tests/test_engine.py`` checks the code of today
returns the same, byte for byte, verifier version strings aside (see ``unversioned``). Verifier changes made on
purpose since are carried into the file by hand: Math's v2 wording of the no-answer reason (4 records).
Regenerate (only on purpose, when records are meant to change) with ``python -m tests.engine_cases``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gymnasium as gym

import gym_nemo
from gym_nemo.policies import HFPolicy, ReferencePolicy, SamplingParams
from gym_nemo.wrappers import TokenEnv

GOLDEN = Path(__file__).parent / "data" / "engine_golden.json"
TIMINGS = {"duration_s", "tokens_per_s", "policy_s", "env_s", "episodes_per_s", "env_time_share"}
#: The metrics both the text and the token collectors reported before the refactor (timings aside).
METRICS = (
    "episodes",
    "groups",
    "mean_reward",
    "pass_rate",
    "mixed_group_rate",
    "mean_turns",
    "truncation_rate",
    "generation_truncation_rate",
    "infra_error_rate",
    "tool_error_rate",
    "policy_tokens",
    "env_tokens",
)


def scrub(value: Any) -> Any:
    """The value without wall-clock timings (they differ run to run), as plain JSON types."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if k not in TIMINGS and k not in ("timing", "fingerprint")}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value


TEXT_METRICS = ("episodes", "mean_reward", "pass_rate", "mean_turns", "truncation_rate", "infra_error_rate")


def unversioned(value: Any) -> Any:
    """The value with each ``verifier`` string cut to its name (``math_verify@2+...`` -> ``math_verify``): a
    verifier's version is bumped on purpose when its rewards change, which is not the engine's business."""
    if isinstance(value, dict):
        return {
            k: v.split("@")[0] if k == "verifier" and isinstance(v, str) else unversioned(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [unversioned(v) for v in value]
    return value


def _metrics(metrics: Any, names: tuple[str, ...] = METRICS) -> dict[str, Any]:
    return {name: getattr(metrics, name) for name in names}


def _rows(path: Path) -> list[dict[str, Any]]:
    return [scrub(json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines()]


def text_lockstep(_: SimpleNamespace, tmp: Path) -> Any:
    from gym_nemo.rollout import collect_rollouts

    envs = gym_nemo.make_vec("nemo/Math-v0", 2, "sync", max_attempts=2)
    try:
        tasks = envs.envs[0].unwrapped.tasks
        policy = ReferencePolicy(tasks, corrupt_rate=0.5, seed=0)
        records, summary = collect_rollouts(
            envs, policy, 6, env_id="nemo/Math-v0", seed=3, out=tmp / "text.jsonl", progress=False
        )
    finally:
        envs.close()
    return {
        "file": _rows(tmp / "text.jsonl"),
        "records": scrub([r.to_row() for r in records]),
        "summary": _metrics(summary, TEXT_METRICS),
    }


def token_lockstep(ctx: SimpleNamespace, tmp: Path) -> Any:
    policy = ctx.policy
    from gym_nemo.rollout import collect_token_rollouts

    wrappers = [functools.partial(TokenEnv, tokenizer=policy.tokenizer)]
    out = {}
    for name, limit in (("plain", None), ("context_limit", 150)):
        envs = gym_nemo.make_vec("nemo/TargetChar-v0", 4, "sync", wrappers=wrappers, max_attempts=3)
        try:
            _records, metrics = collect_token_rollouts(
                envs,
                policy,
                8,
                env_id="nemo/TargetChar-v0",
                group_size=2,
                sampling=SamplingParams(max_tokens=8, seed=0),
                seed=5,
                out=tmp / f"token_{name}.jsonl",
                max_context_tokens=limit,
                progress=False,
            )
        finally:
            envs.close()
        out[name] = {"file": _rows(tmp / f"token_{name}.jsonl"), "metrics": _metrics(metrics)}
    return out


def token_async(ctx: SimpleNamespace, tmp: Path) -> Any:
    policy = ctx.policy
    from gym_nemo.rollout import collect_token_rollouts_async

    def env_fn() -> gym.Env:
        return TokenEnv(gym.make("nemo/TargetChar-v0", max_attempts=2), policy.tokenizer)

    _records, metrics = collect_token_rollouts_async(
        env_fn,
        policy,
        4,
        env_id="nemo/TargetChar-v0",
        group_size=2,
        sampling=SamplingParams(max_tokens=8, seed=1),
        seed=7,
        out=tmp / "async.jsonl",
        max_in_flight=1,
        progress=False,
    )
    return {"file": _rows(tmp / "async.jsonl"), "metrics": _metrics(metrics)}


def eval_runs(ctx: SimpleNamespace, tmp: Path) -> Any:
    from gym_nemo.eval import PolicyConfig, load_suite, run_suite

    suite_file = tmp / "suite.yaml"
    suite_file.write_text(
        "name: golden\nseed: 11\nconcurrency: 1\nsampling: {max_tokens: 8}\n"
        "envs:\n  - env: nemo/TargetChar-v0\n    k: 2\n    tasks: 3\n    kwargs: {max_attempts: 2}\n"
        "  - env: nemo/Math-v0\n    k: 2\n    tasks: 2\n",
        encoding="utf-8",
    )
    out: dict[str, Any] = {}
    for kind, model in (("reference", None), ("hf", str(ctx.model_dir))):
        run_dir = tmp / f"eval_{kind}"
        config = PolicyConfig(kind=kind, model=model, name=f"golden-{kind}")
        results = run_suite(load_suite(suite_file), config, run_dir, progress=False)
        rollouts = {p.name: _rows(p) for p in sorted((run_dir / "rollouts").glob("*.jsonl"))}
        for rows in rollouts.values():  # the async collector appends in finishing order: compare as sets
            rows.sort(key=lambda r: json.dumps(r, sort_keys=True))
        out[kind] = {"results": scrub(results), "rollouts": rollouts}
    return out


def trl_rollout(ctx: SimpleNamespace, _: Path) -> Any:
    policy = ctx.policy
    from gym_nemo.integrations.trl import EnvRollout

    rollout = EnvRollout("nemo/TargetChar-v0", env_kwargs={"max_attempts": 2}, policy=policy)
    rollout.sampling = SamplingParams(max_tokens=8, seed=2)
    data = rollout.dataset()
    prompts = [data[0]["prompt"], data[0]["prompt"], data[1]["prompt"], data[1]["prompt"]]
    try:
        return rollout(prompts, SimpleNamespace(processing_class=policy.tokenizer))
    finally:
        rollout.close()


def single_async(ctx: SimpleNamespace, _: Path) -> Any:
    policy = ctx.policy
    env = TokenEnv(gym.make("nemo/TargetChar-v0", max_attempts=3), policy.tokenizer)
    calls = []
    try:
        from gym_nemo.rollout.engine import EpisodeTrace, aplay, policy_tokens
    except ImportError:  # the code before the engine (how the golden file was written)
        from gym_nemo.integrations.episode import play_token_episode

        async def generate_ids(context: list[int]) -> tuple[list[int], list[float]]:
            calls.append(len(context))
            [gen] = policy.generate([context], SamplingParams(max_tokens=6, seed=len(calls)))
            return gen.token_ids, gen.logprobs

        try:
            ep = asyncio.run(play_token_episode(env, generate_ids, task_id="target-char/e", max_response_tokens=40))
        finally:
            env.close()
        return {
            "prompt_ids": ep.prompt_ids,
            "ids": ep.response_ids,
            "mask": ep.response_mask,
            "logprobs": ep.response_logprobs,
            "step_rewards": ep.step_rewards,
            "done": ep.done,
            "infra_error": ep.infra_error,
        }

    async def generate(trace: EpisodeTrace) -> Any:
        calls.append(len(trace.context))
        [gen] = policy.generate([trace.context], SamplingParams(max_tokens=6, seed=len(calls)))
        return gen

    trace = EpisodeTrace("nemo/TargetChar-v0", policy.name)
    try:
        record = asyncio.run(aplay(env, generate, trace, options={"task_id": "target-char/e"}, max_response_tokens=40))
    finally:
        env.close()
    stream = policy_tokens(record)
    return {
        "prompt_ids": record.prompt_ids,
        "ids": stream.ids,
        "mask": stream.mask,
        "logprobs": stream.logprobs,
        "step_rewards": record.step_rewards,
        "done": record.terminated,
        "infra_error": record.infra_error,
    }


CASES: dict[str, Callable[[SimpleNamespace, Path], Any]] = {
    "text_lockstep": text_lockstep,
    "token_lockstep": token_lockstep,
    "token_async": token_async,
    "eval_runs": eval_runs,
    "trl_rollout": trl_rollout,
    "single_async": single_async,
}


def run_case(name: str, model_dir: Path, policy: HFPolicy) -> Any:
    """Play case ``name`` with the tiny model in a scratch directory; JSON round-tripped, as the golden file has it."""
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(json.dumps(CASES[name](SimpleNamespace(policy=policy, model_dir=model_dir), Path(tmp))))


def main() -> None:
    from gym_nemo.testing.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(Path(tmp) / "chatml", "chatml")
        policy = HFPolicy(model_dir)
        golden = {name: run_case(name, model_dir, policy) for name in CASES}
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
