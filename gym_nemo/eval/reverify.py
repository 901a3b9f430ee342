"""``reverify``: re-score a run's stored rollouts without a model and check every reward is reproduced.

Each stored episode is replayed through a fresh env built as the manifest says (env id and kwargs): reset
on the stored task row, then each assistant message of the transcript stepped in order (tool calls run
again in the sandbox; final answers go to the verifier). The replayed step rewards must equal the stored
``step_rewards`` exactly, and their sum the stored ``reward``. Episodes that ended in an infrastructure
error carry no score and are skipped (counted). The scores are then recomputed from the stored rows and
compared with ``results.json``. Verifier or task-data versions that differ from the manifest's are
reported: a mismatch then points at the version change rather than at the rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
from tqdm.auto import tqdm

from gym_nemo.eval.runner import read_rows, score_run
from gym_nemo.rollout.engine import replay


@dataclass
class Mismatch:
    """One stored value that re-scoring did not reproduce."""

    where: str
    stored: Any
    replayed: Any

    def __str__(self) -> str:
        return f"{self.where}: stored {self.stored!r}, re-scored {self.replayed!r}"


@dataclass
class ReverifyReport:
    """What ``reverify`` checked and found."""

    episodes: int = 0
    checked: int = 0
    skipped_infra: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    version_notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def format(self) -> str:
        lines = [
            f"episodes {self.episodes}: {self.checked} re-scored, {self.skipped_infra} skipped (infra errors)",
            *(f"version: {note}" for note in self.version_notes),
            *(f"MISMATCH {m}" for m in self.mismatches),
            "every reward and score reproduced" if self.ok else f"{len(self.mismatches)} mismatch(es)",
        ]
        return "\n".join(lines)


def reverify(run_dir: str | Path, *, progress: bool = True) -> ReverifyReport:
    """Re-score every stored episode of the run in ``run_dir`` and recompute its scores (module docstring)."""
    run = Path(run_dir)
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    envs = manifest["reproducible"]["envs"]
    report = ReverifyReport()
    rows_by_env: dict[str, list[dict[str, Any]]] = {}
    for name, info in envs.items():
        rows = read_rows(run / "rollouts" / f"{name}.jsonl")
        rows_by_env[name] = rows
        report.episodes += len(rows)
        env = gym.make(info["env_id"], task_ids=info["task_ids"], **info["kwargs"])
        try:
            now = env.unwrapped.versions()
            for key in ("verifier", "tasks", "gym_nemo"):
                if now.get(key) != info["versions"].get(key):
                    report.version_notes.append(
                        f"{name}: {key} is {now.get(key)!r} now, {info['versions'].get(key)!r} in the run"
                    )
            for line, row in enumerate(tqdm(rows, desc=f"reverify {name}", unit="ep", disable=not progress), 1):
                if row.get("infra_error"):
                    report.skipped_infra += 1
                    continue
                record = replay(env, row, seed=row.get("seed"))
                replayed = record.step_rewards
                report.checked += 1
                where = f"{name}.jsonl:{line} ({row['task_id']})"
                if record.infra_error:  # the replay could not be scored: say why beside the numbers
                    report.mismatches.append(Mismatch(f"{where} replay infra error", None, record.infra_error))
                if replayed != row["step_rewards"]:
                    report.mismatches.append(Mismatch(f"{where} step_rewards", row["step_rewards"], replayed))
                if float(sum(replayed)) != row["reward"]:
                    report.mismatches.append(Mismatch(f"{where} reward", row["reward"], float(sum(replayed))))
        finally:
            env.close()
    ks = {name: info["k"] for name, info in envs.items()}
    scores = score_run(rows_by_env, ks, manifest["reproducible"]["seed"])
    _compare(results["scores"], scores, "results.json scores", report)
    return report


def _compare(stored: Any, recomputed: Any, where: str, report: ReverifyReport) -> None:
    """Record every leaf of ``stored`` that differs from ``recomputed``."""
    if isinstance(stored, dict) and isinstance(recomputed, dict):
        for key in sorted(set(stored) | set(recomputed)):
            _compare(stored.get(key), recomputed.get(key), f"{where}.{key}", report)
    elif stored != recomputed:
        report.mismatches.append(Mismatch(where, stored, recomputed))
