"""One JSONL record per episode (DESIGN.md "Records")."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any

import numpy as np


def to_jsonable(value: Any) -> Any:
    """Plain JSON types from what vector envs hand back (numpy scalars and object arrays, tuples)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


#: Optional token-level fields of a record (see ``EpisodeRecord``).
TOKEN_FIELDS = (
    "prompt_ids",
    "completion_ids",
    "completion_mask",
    "completion_logprobs",
    "finish_reasons",
    "policy_versions",
    "group",
    "segments",
    "breaks",
)


@dataclass
class EpisodeRecord:
    """Everything about one finished episode that a trainer, an evaluator or a re-scorer needs.

    Written as the task row's fields (NeMo Gym-compatible: ``responses_create_params`` and the verifier
    fields pass through unchanged) plus the keys below.
    """

    env_id: str
    task_id: str
    task_row: dict[str, Any]
    messages: list[dict[str, Any]]
    reward: float
    step_rewards: list[float] = field(default_factory=list)
    reward_components: list[dict[str, float]] = field(default_factory=list)
    verdict: dict[str, Any] | None = None
    terminated: bool = False
    truncated: bool = False
    infra_error: str | None = None
    num_turns: int = 0
    duration_s: float = 0.0
    policy: str = ""
    seed: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    # Token-level episodes (TokenEnv + a token policy); written only when set. The episode's ids are
    # prompt_ids + completion_ids; completion_mask is 1 for policy tokens and 0 for env tokens;
    # completion_logprobs is the policy's logprob for policy tokens and 0.0 for env tokens.
    prompt_ids: list[int] | None = None
    completion_ids: list[int] | None = None
    completion_mask: list[int] | None = None
    completion_logprobs: list[float] | None = None
    finish_reasons: list[str] | None = None
    # The policy version that sampled each turn (the streaming collector, with weights updated in flight).
    policy_versions: list[int] | None = None
    group: int | None = None
    # Agent-workflow episodes (gym_nemo.agents.trajectory): every token-exact segment of the run (each with
    # the token fields above and the indices of its calls; the top-level token fields are the last one's)
    # and every break between segments (its call, kind and why), so nothing is dropped silently.
    segments: list[dict[str, Any]] | None = None
    breaks: list[dict[str, Any]] | None = None

    def to_row(self) -> dict[str, Any]:
        """The task row's own fields, then every record field (token fields only when set)."""
        row = dict(self.task_row)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "task_row" or (f.name in TOKEN_FIELDS and value is None):
                continue
            row[f.name] = round(value, 6) if f.name == "duration_s" else value
        return to_jsonable(row)

    def write(self, fh: IO[str]) -> None:
        """Append as one line and flush, so an interrupted run leaves only whole lines behind."""
        fh.write(json.dumps(self.to_row(), ensure_ascii=False) + "\n")
        fh.flush()


class RecordSink:
    """Where a collector's finished records go, in finishing order: the list it returns, the JSONL file ``out``
    (appended, one flushed line a record), ``on_record`` and a progress bar. A context manager: closes both.

    >>> sink = RecordSink(None, total=1, progress=False)
    >>> with sink:
    ...     sink.add(EpisodeRecord("nemo/X-v0", "t", {}, [], 1.0))
    >>> [r.reward for r in sink.records]
    [1.0]
    """

    def __init__(
        self,
        out: str | Path | None,
        *,
        on_record: Callable[[EpisodeRecord], None] | None = None,
        total: int,
        done: int = 0,
        progress: bool = True,
        desc: str = "",
    ) -> None:
        from tqdm.auto import tqdm

        self.records: list[EpisodeRecord] = []
        self.on_record = on_record
        self._fh = open(out, "a", encoding="utf-8") if out is not None else None  # noqa: SIM115 - in close()
        self._bar = tqdm(total=total, initial=done, disable=not progress, unit="ep", desc=desc)

    def add(self, record: EpisodeRecord) -> None:
        self.records.append(record)
        if self._fh is not None:
            record.write(self._fh)
        if self.on_record is not None:
            self.on_record(record)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()
        if self._fh is not None:
            self._fh.close()

    def __enter__(self) -> RecordSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def whole_lines(path: Path) -> list[str]:
    """The complete lines of a JSONL file being resumed; a torn last line (a kill -9 mid-write) is cut off
    the file, so appends start on a fresh line and the episode it held is played again, not kept half."""
    if not path.exists():
        return []
    data = path.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    if len(whole) != len(data):
        with open(path, "r+b") as fh:
            fh.truncate(len(whole))
    return whole.decode("utf-8").splitlines()
