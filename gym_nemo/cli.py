"""The ``gym-nemo`` command: ``list`` the environments, ``rollout`` a policy (or ``agent-rollout`` an agent workflow)
and write JSONL records."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym

import gym_nemo
from gym_nemo.core.task import TaskSource
from gym_nemo.datasets_export import add_export_command
from gym_nemo.eval.commands import add_eval_commands
from gym_nemo.nemo_gym.cli import add_nemo_gym_commands
from gym_nemo.registry import ENVS, NEMO_GYM_ENVS
from gym_nemo.serve.cli import add_serve_commands


def _cmd_list(_: argparse.Namespace) -> int:
    width = max(len(k) for k in {**ENVS, **NEMO_GYM_ENVS})
    for env_id, entry in ENVS.items():
        print(f"{env_id:<{width}}  {entry.summary}")
    print("\nNeMo Gym's own servers (need `gym-nemo nemo-gym setup`; every server: `gym-nemo nemo-gym list`):")
    for env_id, entry in NEMO_GYM_ENVS.items():
        print(f"{env_id:<{width}}  {entry.summary}")
    return 0


def _task_pool(env_id: str, env_kwargs: dict[str, Any]) -> TaskSource:
    """The task pool envs built with these kwargs use (ReasoningGym's ``dataset``, ToolUse's ``domain``, ...)."""
    env = gym.make(env_id, **env_kwargs).unwrapped
    try:
        return env.tasks
    finally:
        env.close()


def _cmd_rollout(args: argparse.Namespace) -> int:
    from gym_nemo.policies import POLICY_KINDS, make_policy
    from gym_nemo.rollout import collect_rollouts

    if args.env_id not in ENVS and args.env_id not in NEMO_GYM_ENVS:
        print(f"unknown env {args.env_id!r}; `gym-nemo list` shows the available ones", file=sys.stderr)
        return 2
    try:
        env_kwargs: dict[str, Any] = json.loads(args.env_kwargs)
    except json.JSONDecodeError as exc:
        print(f"--env-kwargs is not valid JSON: {exc}", file=sys.stderr)
        return 2
    if args.policy in ("hf", "vllm"):
        return _rollout_tokens(args, env_kwargs)
    if args.policy not in POLICY_KINDS:
        print(f"unknown policy {args.policy!r}; available: {', '.join(POLICY_KINDS)}", file=sys.stderr)
        return 2
    if args.policy == "openai":
        if not args.model:
            print("--policy openai needs --model (the served model name) and usually --base-url", file=sys.stderr)
            return 2
        opts: dict[str, Any] = {"model": args.model, "base_url": args.base_url, "max_tokens": args.max_tokens}
        opts.update(temperature=args.temperature, seed=args.seed)
    else:
        tasks = _task_pool(args.env_id, env_kwargs)
        if env_kwargs.get("task_ids") is None and any(t.reference is None for t in tasks):
            # The reference policy can only play tasks that have a reference answer.
            env_kwargs["task_ids"] = [t.task_id for t in tasks if t.reference is not None]
            print(f"playing the {len(env_kwargs['task_ids'])} of {len(tasks)} tasks that have a reference answer")
            tasks = _task_pool(args.env_id, env_kwargs)
        opts = {"tasks": tasks, "corrupt_rate": args.corrupt_rate, "seed": args.seed}
    policy = make_policy(args.policy, **opts)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and not (args.append or args.resume):
        out.unlink()
    envs = gym_nemo.make_vec(args.env_id, args.num_envs, args.vectorization, **env_kwargs)
    try:
        _, summary = collect_rollouts(
            envs,
            policy,
            args.num_episodes,
            env_id=args.env_id,
            seed=args.seed,
            out=out,
            resume=args.resume,
            progress=not args.quiet,
        )
    finally:
        envs.close()
    extra = f" (corrupt_rate={args.corrupt_rate})" if args.policy == "reference" else ""
    print(f"{args.env_id} · policy={policy.name}{extra} · {args.num_envs} envs")
    print(summary.format())
    print(f"wrote {summary.episodes} episodes to {out}")
    return 0


def _rollout_tokens(args: argparse.Namespace, env_kwargs: dict[str, Any]) -> int:
    """Token-level rollouts: ``HFPolicy`` or ``VLLMPolicy`` over ``TokenEnv``-wrapped envs, with group sampling;
    lock-step waves over a vector env (``--collector lockstep``) or independent episodes (``async``)."""
    import copy
    from functools import partial

    from gym_nemo.policies import SamplingParams, make_policy
    from gym_nemo.rollout import collect_token_rollouts, collect_token_rollouts_async
    from gym_nemo.wrappers import TokenEnv

    if not args.model:
        print(f"--policy {args.policy} needs --model (a transformers model directory)", file=sys.stderr)
        return 2
    if args.group_size < 1 or args.num_envs % args.group_size or args.num_episodes % args.group_size:
        print("--group-size must be >= 1 and divide --num-envs and --num-episodes", file=sys.stderr)
        return 2
    policy: Any = make_policy(args.policy, model=args.model, **({"device": args.device} if args.policy == "hf" else {}))
    sampling = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and not (args.append or args.resume):
        out.unlink()
    common: dict[str, Any] = {
        "env_id": args.env_id,
        "group_size": args.group_size,
        "sampling": sampling,
        "seed": args.seed,
        "out": out,
        "resume": args.resume,
        "max_context_tokens": policy.max_context_tokens,
        "progress": not args.quiet,
    }
    try:
        if args.collector == "async":
            _, summary = collect_token_rollouts_async(
                lambda: TokenEnv(gym.make(args.env_id, **env_kwargs), copy.deepcopy(policy.tokenizer)),
                policy,
                args.num_episodes,
                max_in_flight=args.num_envs,
                **common,
            )
        else:
            wrappers = [partial(TokenEnv, tokenizer=policy.tokenizer)]
            envs = gym_nemo.make_vec(args.env_id, args.num_envs, args.vectorization, wrappers=wrappers, **env_kwargs)
            try:
                _, summary = collect_token_rollouts(envs, policy, args.num_episodes, **common)
            finally:
                envs.close()
    finally:
        if args.policy == "vllm":
            policy.close()
    print(
        f"{args.env_id} · policy={policy.name} · {args.collector} · {args.num_envs} envs · groups of {args.group_size}"
    )
    print(summary.format())
    print(f"wrote {summary.episodes} episodes to {out}")
    return 0


def _cmd_agent_rollout(args: argparse.Namespace) -> int:
    """Agent runs as a rollout source: each task row through the workflow, its LLM calls captured by a gateway."""
    from gym_nemo.agents import Gateway, PolicyBackend, UpstreamBackend, resolve_workflow
    from gym_nemo.agents.rollout import collect_agent_rollouts
    from gym_nemo.core.task import read_jsonl
    from gym_nemo.policies import make_policy

    try:
        rows = read_jsonl(args.tasks)
        if not rows:
            raise ValueError(f"{args.tasks}: no task rows")
        workflow = resolve_workflow(args.endpoint or args.workflow, timeout_s=args.timeout_s)
    except (OSError, ValueError, TypeError, ImportError) as exc:
        print(f"agent-rollout: {exc}", file=sys.stderr)
        return 2
    tokenizer = None
    if args.policy == "upstream":
        if not args.base_url:
            print("--policy upstream needs --base-url (an OpenAI-compatible server, e.g. vLLM's)", file=sys.stderr)
            return 2
        backend: Any = UpstreamBackend(args.base_url, args.model or "", max_tokens=args.max_tokens)
        name = f"upstream:{args.model or args.base_url}"
    else:
        if not args.model:
            print(f"--policy {args.policy} needs --model (a model directory)", file=sys.stderr)
            return 2
        opts: dict[str, Any] = {"model": args.model}
        if args.policy == "hf":
            opts["device"] = args.device
        policy = make_policy(args.policy, **opts)
        tokenizer = policy.tokenizer
        backend, name = PolicyBackend(policy, max_tokens=args.max_tokens), policy.name
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        out.unlink(missing_ok=True)
    with Gateway(backend).start() as gateway:
        _, metrics = collect_agent_rollouts(
            gateway,
            workflow,
            rows,
            group_size=args.group_size,
            concurrency=args.concurrency,
            timeout_s=args.timeout_s,
            out=out,
            resume=args.resume,
            tokenizer=tokenizer,
            policy=name,
        )
    source = args.endpoint or args.workflow
    print(f"nemo/AgentWorkflow-v0 · workflow={source} · policy={name} · groups of {args.group_size}")
    print(metrics.format())
    print(f"wrote {metrics.episodes} episodes to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gym-nemo", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gym-nemo {gym_nemo.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="list the registered environments").set_defaults(func=_cmd_list)

    p = sub.add_parser("agent-rollout", help="run an agent workflow over task rows; record its LLM calls as JSONL")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--workflow", help="pkg.mod:func, called as func(row, base_url) -> score")
    source.add_argument("--endpoint", help="a NeMo Gym-style agent service: POST URL/run with the row + base_url")
    p.add_argument("--tasks", required=True, help="JSONL of task rows, one per line")
    p.add_argument("--policy", choices=("hf", "vllm", "upstream"), default="hf", help="what answers the calls")
    p.add_argument("--model", default=None, help="hf/vllm: model directory; upstream: the served model name")
    p.add_argument("--base-url", default=None, help="--policy upstream: its /v1 URL (vLLM: token ids captured)")
    p.add_argument("--device", default="cpu", help="--policy hf: torch device")
    p.add_argument("--max-tokens", type=int, default=512, help="cap of each call's completion")
    p.add_argument("--group-size", type=int, default=1, help="runs per task row (GRPO groups)")
    p.add_argument("--concurrency", type=int, default=8, help="runs at once")
    p.add_argument("--timeout-s", type=float, default=600.0, help="a run past this is an infra-error record")
    p.add_argument("--out", default="runs/agent_rollouts.jsonl")
    p.add_argument("--resume", action="store_true", help="continue a killed run in --out (same arguments)")
    p.set_defaults(func=_cmd_agent_rollout)

    p = sub.add_parser("rollout", help="collect verified rollouts and write them as JSONL")
    p.add_argument("env_id", help="e.g. nemo/CodeExec-v0")
    p.add_argument("--num-episodes", type=int, default=32)
    p.add_argument("--num-envs", type=int, default=4)
    p.add_argument(
        "--policy",
        default="reference",
        help="'reference' (embedded default: replays reference solutions; needs no model) or 'hf' "
        "(a transformers model, --model; token-level records; needs the [hf] extra) or 'vllm' (the same "
        "on vLLM's engine, --model DIR; needs the [vllm] extra) or 'openai' (an OpenAI-compatible chat "
        "endpoint, --model NAME --base-url URL; text-level records)",
    )
    p.add_argument("--model", default=None, help="--policy hf: model directory or hub id; openai: model name")
    p.add_argument("--base-url", default=None, help="--policy openai: e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--device", default="cpu", help="--policy hf: torch device")
    p.add_argument("--group-size", type=int, default=1, help="--policy hf/vllm: rollouts per task (GRPO groups)")
    p.add_argument(
        "--collector",
        choices=("lockstep", "async"),
        default="lockstep",
        help="--policy hf/vllm: lock-step waves over a vector env, or episodes that progress independently "
        "(--num-envs of them in flight, the policy batching whatever requests are pending)",
    )
    p.add_argument("--max-tokens", type=int, default=256, help="--policy hf/openai: tokens per assistant turn")
    p.add_argument("--temperature", type=float, default=1.0, help="--policy hf/openai: sampling temperature")
    p.add_argument(
        "--corrupt-rate",
        type=float,
        default=0.3,
        help="share of reference episodes that submit a broken answer, so rewards are mixed",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vectorization", choices=("async", "sync"), default="async")
    p.add_argument("--env-kwargs", default="{}", help="JSON kwargs for the env, e.g. '{\"timeout_s\": 5}'")
    p.add_argument("--out", default="runs/rollouts.jsonl")
    p.add_argument("--append", action="store_true", help="append to --out instead of replacing it")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out (same arguments): play only the episodes it lacks",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_rollout)
    add_eval_commands(sub)
    add_export_command(sub)
    add_serve_commands(sub)
    add_nemo_gym_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
