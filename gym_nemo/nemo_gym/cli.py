"""``gym-nemo nemo-gym setup [SERVER ...]`` and ``gym-nemo nemo-gym list``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gym_nemo.nemo_gym import runtime, table


def _cmd_setup(args: argparse.Namespace) -> int:
    try:
        python = runtime.setup(args.servers)
    except (runtime.RuntimeMissing, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 1
    done = runtime.read_stamp().get("servers") or []
    print(f"NeMo Gym {runtime.NEMO_GYM_VERSION} ready: {python} (server requirements installed: {len(done)})")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    known = table.servers()
    try:
        names = runtime.installed_servers()
        where = f"installed in {runtime.venv_dir()}"
    except runtime.RuntimeMissing:
        names = sorted(known)
        where = f"in the table of nemo-gym {runtime.NEMO_GYM_VERSION}; not set up (`gym-nemo nemo-gym setup`)"
    installed = set(runtime.read_stamp().get("servers") or [])  # type: ignore[arg-type]
    width = max(len(n) for n in names)
    print(f"{len(names)} NeMo Gym resources servers, {where}")
    for name in names:
        entry: dict[str, Any] = known.get(name, {"status": "", "kind": "?", "note": "not in gym_nemo's table"})
        status = table.STATUSES.get(entry["status"], "unknown")
        ready = "requirements installed" if name in installed else ""
        replay = f"replay {entry['replay']}" if entry.get("replay") else ""
        extra = " · ".join(x for x in (entry["kind"], replay, ready, entry.get("note", "")) if x)
        if args.status and entry["status"] != args.status:
            continue
        print(f"{name:<{width}}  {status:<30} {extra}")
    return 0


def add_nemo_gym_commands(sub: Any) -> None:
    p = sub.add_parser("nemo-gym", help="NeMo Gym's own resources servers: set up the runtime, list the servers")
    commands = p.add_subparsers(dest="nemo_gym_command", required=True)
    s = commands.add_parser("setup", help="create the NeMo Gym venv (Python >= 3.12) and install server requirements")
    s.add_argument(
        "servers",
        nargs="*",
        help="servers whose requirements to install; 'offline': all that run offline (with or without a judge)",
    )
    s.set_defaults(func=_cmd_setup)
    ls = commands.add_parser("list", help="every server of the installed NeMo Gym with its status")
    ls.add_argument("--status", choices=sorted(table.STATUSES), help="only servers with this status")
    ls.set_defaults(func=_cmd_list)
