"""``gym-nemo serve``: the subcommand, added to the main parser by :func:`add_serve_commands`."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from types import ModuleType
from typing import Any

from gym_nemo.core.errors import MissingDependency


def _prepare(args: argparse.Namespace, command: str, module: str) -> tuple[ModuleType, dict[str, Any]] | None:
    """The serving module and the command's ``--env-kwargs`` for a registered ``env_id``; None (after saying
    why) if the serve extra is missing or either argument is wrong."""
    import gymnasium as gym

    try:
        served = importlib.import_module(module)
    except ImportError as exc:
        print(MissingDependency(exc.name or str(exc), what=f"gym-nemo {command}", extra="serve"), file=sys.stderr)
        return None
    if args.env_id not in gym.registry:
        print(f"unknown env {args.env_id!r}; `gym-nemo list` shows the available ones", file=sys.stderr)
        return None
    try:
        return served, json.loads(args.env_kwargs)
    except json.JSONDecodeError as exc:
        print(f"--env-kwargs is not valid JSON: {exc}", file=sys.stderr)
        return None


def _cmd_serve(args: argparse.Namespace) -> int:
    prepared = _prepare(args, "serve", "gym_nemo.serve.server")
    if prepared is None:
        return 2
    server, env_kwargs = prepared
    config = server.ServeConfig(
        args.env_id,
        env_kwargs,
        workers=args.workers,
        max_pending=args.max_pending,
        max_sessions=args.max_sessions,
        session_ttl_s=args.session_ttl,
        max_body_bytes=args.max_body_bytes,
        call_timeout_s=args.call_timeout,
    )
    server.serve(config, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _cmd_serve_mcp(args: argparse.Namespace) -> int:
    import asyncio

    prepared = _prepare(args, "serve-mcp", "gym_nemo.serve.mcp_server")
    if prepared is None:
        return 2
    mcp_server, env_kwargs = prepared
    asyncio.run(mcp_server.serve_stdio(args.env_id, env_kwargs))
    return 0


def add_serve_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``serve`` and ``serve-mcp`` to the ``gym-nemo`` subcommands."""
    p = sub.add_parser("serve", help="serve sessions of an env over HTTP (NeMo Gym resources-server routes too)")
    p.add_argument("env_id", help="a registered env, e.g. nemo/Math-v0")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port (the address is printed)")
    p.add_argument("--env-kwargs", default="{}", help="JSON kwargs for every session's env")
    p.add_argument("--workers", type=int, default=0, help="env-call threads (0: 2 * cores + 2)")
    p.add_argument("--max-pending", type=int, default=256, help="env calls queued or running before 503s")
    p.add_argument("--max-sessions", type=int, default=10_000, help="open sessions before creates get 429")
    p.add_argument("--session-ttl", type=float, default=600.0, help="seconds idle before a session is closed")
    p.add_argument("--max-body-bytes", type=int, default=4 * 1024 * 1024, help="larger request bodies get 413")
    p.add_argument("--call-timeout", type=float, default=300.0, help="seconds one env call may take (then 504)")
    p.add_argument("--log-level", default="warning")
    p.set_defaults(func=_cmd_serve)

    m = sub.add_parser("serve-mcp", help="serve an env's tools over MCP on stdin/stdout (for MCP clients)")
    m.add_argument("env_id", help="a registered env with tools, e.g. nemo/CodeExec-v0")
    m.add_argument("--env-kwargs", default="{}", help="JSON kwargs for the env")
    m.set_defaults(func=_cmd_serve_mcp)
