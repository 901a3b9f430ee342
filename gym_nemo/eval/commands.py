"""The ``gym-nemo eval``, ``reverify`` and ``leaderboard`` subcommands (added to the CLI by ``add_eval_commands``)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _cmd_eval(args: argparse.Namespace) -> int:
    from gym_nemo.eval.runner import PolicyConfig, PolicyUnavailable, format_results, run_suite
    from gym_nemo.eval.suite import SuiteError, load_suite

    try:
        policy_kwargs = json.loads(args.policy_kwargs)
    except json.JSONDecodeError as exc:
        print(f"gym-nemo eval: --policy-kwargs is not valid JSON: {exc}", file=sys.stderr)
        return 2
    try:
        suite = load_suite(args.suite).with_overrides(
            seed=args.seed, sampling={"max_tokens": args.max_tokens, "temperature": args.temperature}
        )
        policy = PolicyConfig(
            args.policy,
            model=args.model,
            base_url=args.base_url,
            corrupt_rate=args.corrupt_rate,
            device=args.device,
            name=args.label,
            policy_kwargs=policy_kwargs,
        )
    except (SuiteError, ValueError) as exc:
        print(f"gym-nemo eval: {exc}", file=sys.stderr)
        return 2
    try:
        results = run_suite(
            suite,
            policy,
            args.out,
            progress=not args.quiet,
            overwrite=args.overwrite,
            episode_timeout_s=args.episode_timeout,
        )
    except (FileExistsError, SuiteError) as exc:  # SuiteError: task ids the env does not have, nothing to play
        print(f"gym-nemo eval: {exc}", file=sys.stderr)
        return 2
    except PolicyUnavailable as exc:
        print(f"gym-nemo eval: stopped, the policy is not answering: {exc}", file=sys.stderr)
        return 1
    print(f"suite {suite.name} · policy {policy.label} · seed {suite.seed} · manifest {results['fingerprint']}")
    print(format_results(results))
    print(f"wrote {args.out}/results.json, manifest.json and rollouts/")
    return 0


def _cmd_reverify(args: argparse.Namespace) -> int:
    from gym_nemo.eval.reverify import reverify

    try:
        report = reverify(args.run_dir, progress=not args.quiet)
    except FileNotFoundError as exc:
        print(f"gym-nemo reverify: {args.run_dir} is not a complete `gym-nemo eval` run: {exc}", file=sys.stderr)
        return 2
    print(report.format())
    return 0 if report.ok else 1


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from gym_nemo.eval.report import write_leaderboard

    try:
        paths = write_leaderboard(args.run_dirs, args.out)
    except FileNotFoundError as exc:
        print(f"gym-nemo leaderboard: {exc}", file=sys.stderr)
        return 2
    print(paths["markdown"].read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def add_eval_commands(sub: Any) -> None:
    """Add ``eval``, ``reverify`` and ``leaderboard`` to the ``gym-nemo`` subparsers."""
    p = sub.add_parser("eval", help="run an evaluation suite; write rollouts, results.json and manifest.json")
    p.add_argument("--suite", default="quick", help="a shipped suite (default, quick, games) or a suite YAML file")
    p.add_argument("--policy", default="reference", help="reference (no model), openai, hf or vllm")
    p.add_argument("--model", default=None, help="openai: served model name; hf/vllm: model directory or id")
    p.add_argument("--label", default=None, help="the run's name on leaderboards (default: --model)")
    p.add_argument("--base-url", default=None, help="--policy openai: e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--device", default="cpu", help="--policy hf: torch device")
    p.add_argument(
        "--policy-kwargs",
        default="{}",
        help='hf/vllm: JSON constructor kwargs, e.g. \'{"enforce_eager": true, "kv_cache_memory_bytes": 268435456}\'',
    )
    p.add_argument("--corrupt-rate", type=float, default=0.3, help="--policy reference: share of broken answers")
    p.add_argument("--seed", type=int, default=None, help="override the suite's seed")
    p.add_argument("--max-tokens", type=int, default=None, help="override the suite's max_tokens")
    p.add_argument("--temperature", type=float, default=None, help="override the suite's temperature")
    p.add_argument("--episode-timeout", type=float, default=None, help="hf/vllm: per-episode deadline (s)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("reverify", help="re-score a run's stored rollouts without a model; exit 1 on any mismatch")
    p.add_argument("run_dir")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_reverify)

    p = sub.add_parser("leaderboard", help="merge eval runs into leaderboard.md, .json and .html")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--out", default="leaderboard", help="output directory")
    p.set_defaults(func=_cmd_leaderboard)
