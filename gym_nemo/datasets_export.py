"""Rollouts out as datasets: a run's JSONL records as a Hugging Face ``datasets`` dataset for SFT or DPO.

``gym-nemo export RUN.jsonl --format sft|dpo --out DIR`` (or :func:`export_run`) writes a dataset that
``datasets.load_from_disk(DIR)`` loads and TRL's ``SFTTrainer`` / ``DPOTrainer`` train on as it is:

* **sft**: ``messages`` (the episode's chat: system, user, assistant turns with their tool calls in the text
  the model wrote, tool results, feedback) and ``tools`` (the env's tool schemas as a JSON string, which TRL
  passes to the chat template). Episodes are chosen per group (a record's ``group``, else its task):
  ``select="best"`` keeps each group's highest-reward episode when its reward is above ``min_reward``;
  ``select="passing"`` keeps every episode whose verdict passed.
* **dpo**: ``prompt`` (the messages before the first assistant turn), ``chosen`` and ``rejected`` (the rest of
  the chat of the group's highest- and lowest-reward episodes) and ``tools``, from groups with mixed rewards
  only: chosen and rejected always answer the same task, from the same prompt.

Both drop episodes that ended in an infrastructure error or were truncated (their chat is no sample of the
task) and the messages after the last assistant turn (env feedback is not the model's to learn). Extra columns
(``env_id``, ``task_id``, rewards) say where each row came from. Bad input is an error before anything is
written: a line that is not a JSON record (``skip_invalid=True`` skips such lines and counts them), an empty
run, a run with nothing to export. The dataset is written to a temporary folder beside ``out`` and renamed
into place, so ``out`` is either the complete new dataset or untouched.

Requires ``datasets`` (the ``[export]`` extra).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Format = Literal["sft", "dpo"]
REQUIRED = ("task_id", "messages", "reward")


@dataclass
class ExportSummary:
    """What an export read, kept and wrote."""

    format: str
    out: Path
    episodes: int = 0
    invalid_lines: list[int] = field(default_factory=list)
    dropped: int = 0  # infra errors and truncated episodes
    groups: int = 0
    rows: int = 0
    tools_unknown: dict[str, str] = field(default_factory=dict)  # env id -> why its tool schemas are unknown

    def format_text(self) -> str:
        skipped = f", {len(self.invalid_lines)} invalid lines skipped" if self.invalid_lines else ""
        lines = [
            f"{self.episodes} episodes in {self.groups} groups ({self.dropped} infra-error/truncated dropped{skipped})"
            f" -> {self.rows} {self.format} rows in {self.out}"
        ]
        lines += [
            f"note: no tool schemas for {env} (its rows have tools=null): {why}"
            for env, why in self.tools_unknown.items()
        ]
        return "\n".join(lines)


def read_run(path: str | Path, *, skip_invalid: bool = False) -> tuple[list[dict[str, Any]], list[int]]:
    """The records of a run's JSONL and the numbers (1-based) of the lines that are not records.

    Raises ``ValueError`` naming the bad lines unless ``skip_invalid``; blank lines are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no run file at {path}")
    rows, bad, reasons = [], [], []
    data = path.read_bytes()
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
            missing = [k for k in REQUIRED if k not in row]
            if missing:
                raise ValueError(f"no {', '.join(missing)}")
            if not isinstance(row["messages"], list):
                raise ValueError("'messages' is not a list")
            float(row["reward"])
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            torn = number == len(lines) and not data.endswith(b"\n")
            bad.append(number)
            reasons.append(
                f"line {number}: {exc}{' (a torn last line: the run was killed mid-write?)' if torn else ''}"
            )
            continue
        rows.append(row)
    if bad and not skip_invalid:
        shown = "; ".join(reasons[:5]) + (f"; ... ({len(bad)} in all)" if len(bad) > 5 else "")
        raise ValueError(f"{path} has lines that are not episode records: {shown} (skip them with --skip-invalid)")
    return rows, bad


def _group_key(row: Mapping[str, Any]) -> tuple[str, str]:
    group = row.get("group")
    return (str(row.get("env_id", "")), f"group:{group}" if group is not None else f"task:{row['task_id']}")


def _usable(row: Mapping[str, Any]) -> bool:
    return not row.get("infra_error") and not row.get("truncated")


def _through_last_assistant(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=-1)
    return [_message(m) for m in messages[: last + 1]]


def _message(message: Mapping[str, Any]) -> dict[str, Any]:
    """The message with the keys chat templates read (role, content, and a tool result's name and id)."""
    out = {"role": str(message["role"]), "content": str(message.get("content") or "")}
    for key in ("name", "tool_call_id"):
        if message.get(key) is not None:
            out[key] = str(message[key])
    return out


class _Tools:
    """The tool schemas of a row: its own ``tools`` (or ``responses_create_params.tools``), else those of its env
    built with default arguments; ``unknown`` names the envs that could not be built (their rows get ``null``:
    the chat template then lists no tools, though the env's system prompt still describes them)."""

    def __init__(self) -> None:
        self._by_env: dict[str, list[dict[str, Any]] | None] = {}
        self.unknown: dict[str, str] = {}

    def __call__(self, row: Mapping[str, Any]) -> str:
        tools = row.get("tools") or (row.get("responses_create_params") or {}).get("tools")
        if tools is None:
            env_id = str(row.get("env_id", ""))
            if env_id not in self._by_env:
                self._by_env[env_id] = self._env_tools(env_id)
            tools = self._by_env[env_id]
        return json.dumps(None if tools is None else list(tools), ensure_ascii=False)

    def _env_tools(self, env_id: str) -> list[dict[str, Any]] | None:
        import gymnasium as gym

        import gym_nemo  # noqa: F401  (registers the envs)

        try:
            env = gym.make(env_id)
        except Exception as exc:  # an unregistered id, an env that needs arguments (a server URL, ...)
            self.unknown[env_id] = f"{type(exc).__name__}: {exc}"
            return None
        try:
            return [dict(t) for t in env.unwrapped.tools]
        finally:
            env.close()


def sft_rows(
    rows: Sequence[Mapping[str, Any]],
    *,
    select: Literal["best", "passing"] = "best",
    min_reward: float = 0.0,
    tools: _Tools | None = None,
) -> list[dict[str, Any]]:
    """SFT rows (``messages``, ``tools``, ``env_id``, ``task_id``, ``reward``); see the module docstring."""
    if select not in ("best", "passing"):
        raise ValueError(f"select must be 'best' or 'passing', got {select!r}")
    tools = tools or _Tools()
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        if _usable(row):
            groups.setdefault(_group_key(row), []).append(row)
    picked: list[Mapping[str, Any]] = []
    for members in groups.values():
        if select == "passing":
            picked += [r for r in members if (r.get("verdict") or {}).get("passed")]
        else:
            best = max(members, key=lambda r: float(r["reward"]))
            if float(best["reward"]) > min_reward:
                picked.append(best)
    out = []
    for row in picked:
        messages = _through_last_assistant(row["messages"])
        if any(m["role"] == "assistant" for m in messages):
            out.append(
                {
                    "messages": messages,
                    "tools": tools(row),
                    "env_id": str(row.get("env_id", "")),
                    "task_id": str(row["task_id"]),
                    "reward": float(row["reward"]),
                }
            )
    return out


def dpo_rows(rows: Sequence[Mapping[str, Any]], *, tools: _Tools | None = None) -> list[dict[str, Any]]:
    """DPO rows (``prompt``, ``chosen``, ``rejected``, ``tools`` and provenance); see the module docstring."""
    tools = tools or _Tools()
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        if _usable(row):
            groups.setdefault(_group_key(row), []).append(row)
    out = []
    for members in groups.values():
        best = max(members, key=lambda r: float(r["reward"]))
        worst = min(members, key=lambda r: float(r["reward"]))
        if float(best["reward"]) == float(worst["reward"]):
            continue
        chosen, rejected = _through_last_assistant(best["messages"]), _through_last_assistant(worst["messages"])
        start = next((i for i, m in enumerate(chosen) if m["role"] == "assistant"), None)
        other = next((i for i, m in enumerate(rejected) if m["role"] == "assistant"), None)
        if start is None or other is None or chosen[:start] != rejected[:other]:
            continue  # no answer to compare, or not the same prompt (e.g. envs built with other system prompts)
        out.append(
            {
                "prompt": chosen[:start],
                "chosen": chosen[start:],
                "rejected": rejected[other:],
                "tools": tools(best),
                "env_id": str(best.get("env_id", "")),
                "task_id": str(best["task_id"]),
                "chosen_reward": float(best["reward"]),
                "rejected_reward": float(worst["reward"]),
            }
        )
    return out


def export_run(
    run: str | Path,
    out: str | Path,
    *,
    format: Format,
    select: Literal["best", "passing"] = "best",
    min_reward: float = 0.0,
    skip_invalid: bool = False,
    overwrite: bool = False,
) -> ExportSummary:
    """Write ``run``'s records as a ``format`` dataset to ``out`` (see the module docstring)."""
    if format not in ("sft", "dpo"):
        raise ValueError(f"format must be 'sft' or 'dpo', got {format!r}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    records, invalid = read_run(run, skip_invalid=skip_invalid)
    summary = ExportSummary(format=format, out=out, episodes=len(records), invalid_lines=invalid)
    if not records:
        raise ValueError(f"{run} holds no episode records: nothing to export")
    usable = [r for r in records if _usable(r)]
    summary.dropped = len(records) - len(usable)
    summary.groups = len({_group_key(r) for r in usable})
    tools = _Tools()
    if format == "sft":
        rows = sft_rows(records, select=select, min_reward=min_reward, tools=tools)
        why = (
            "no episode passed its verifier"
            if select == "passing"
            else f"no group has an episode with reward above {min_reward:g}"
        )
    else:
        rows = dpo_rows(records, tools=tools)
        why = "no group has mixed rewards (DPO needs a better and a worse episode of one task; sample groups)"
    if not rows:
        raise ValueError(f"nothing to export from {run} as {format}: {why} ({summary.groups} usable groups)")
    summary.rows, summary.tools_unknown = len(rows), tools.unknown
    _write_atomically(rows, out)
    return summary


def _write_atomically(rows: list[dict[str, Any]], out: Path) -> None:
    """``Dataset.from_list(rows).save_to_disk`` into a temporary folder beside ``out``, then renamed into place."""
    from datasets import Dataset

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    old = None
    try:
        Dataset.from_list(rows).save_to_disk(str(staging / "data"))
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent)) / "data"
            out.rename(old)
        (staging / "data").rename(out)
    except BaseException:
        if old is not None and not out.exists():
            old.rename(out)  # put the previous dataset back
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old.parent, ignore_errors=True)


def _cmd_export(args: argparse.Namespace) -> int:
    try:
        summary = export_run(
            args.run,
            args.out,
            format=args.format,
            select=args.select,
            min_reward=args.min_reward,
            skip_invalid=args.skip_invalid,
            overwrite=args.overwrite,
        )
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"gym-nemo export: {exc}", file=sys.stderr)
        return 2
    print(summary.format_text())
    return 0


def add_export_command(sub: Any) -> None:
    """The ``gym-nemo export`` subcommand (``sub``: the CLI's subparsers)."""
    p = sub.add_parser("export", help="write a run's JSONL records as a Hugging Face dataset for SFT or DPO")
    p.add_argument("run", help="a rollout JSONL (gym-nemo rollout --out, a collector's out=)")
    p.add_argument("--format", choices=("sft", "dpo"), required=True)
    p.add_argument("--out", required=True, help="dataset folder (datasets.load_from_disk reads it)")
    p.add_argument(
        "--select",
        choices=("best", "passing"),
        default="best",
        help="sft: each group's best episode (reward above --min-reward) or every passing episode",
    )
    p.add_argument("--min-reward", type=float, default=0.0, help="sft --select best: keep rewards above this")
    p.add_argument("--skip-invalid", action="store_true", help="skip lines that are not records (else an error)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_cmd_export)
