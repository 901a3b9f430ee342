"""The ``Task`` record and where tasks come from.

A task row is a NeMo Gym row: ``responses_create_params`` (the prompt, as OpenAI ``input`` messages or
a string, plus optional ``tools``) and the verifier's fields (``verifier_metadata``, ``expected_answer``,
...), which are hidden from the policy. Each env converts its rows with ``row_to_task``; the row itself
is kept on the task so rollouts can be written back as NeMo Gym rows and re-scored later.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Message = dict[str, Any]


@dataclass(frozen=True)
class Task:
    """One problem: what the policy is shown (``messages``) and what only the verifier sees (``hidden``)."""

    task_id: str
    messages: tuple[Message, ...]
    hidden: Mapping[str, Any] = field(default_factory=dict)
    row: Mapping[str, Any] = field(default_factory=dict)
    # A correct final message, for the reference policy and tests; or a tuple of messages to send turn by turn
    # (multi-turn tasks: tool calls first, the final answer last).
    reference: str | tuple[str, ...] | None = None


def input_messages(row: Mapping[str, Any]) -> list[Message]:
    """The prompt messages of a NeMo Gym row, normalised to ``[{"role", "content"}]`` with string content."""
    params = row.get("responses_create_params")
    if not isinstance(params, Mapping):
        raise ValueError('task row needs "responses_create_params" with the prompt in "input"')
    raw = params.get("input")
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise ValueError("responses_create_params.input must be a string or a non-empty list of messages")
    messages: list[Message] = []
    for item in raw:
        if not isinstance(item, Mapping) or "role" not in item:
            raise ValueError(f"each input message needs a role and content, got {item!r:.200}")
        content = item.get("content", "")
        if isinstance(content, list):  # Responses API content parts
            content = "".join(part.get("text", "") for part in content if isinstance(part, Mapping))
        if not isinstance(content, str):
            raise ValueError(f"message content must be text, got {type(content).__name__}")
        role = "system" if item["role"] == "developer" else item["role"]
        messages.append({"role": role, "content": content})
    return messages


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a bad line raises with its line number instead of being skipped."""
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON: {exc.msg}") from exc
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: each line must be a JSON object")
            rows.append(row)
    return rows


def content_hash(rows: Iterable[Mapping[str, Any]]) -> str:
    """A stable digest of task rows, recorded with rollouts so a result names the exact data it used."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


class TaskSource(Sequence[Task]):
    """An indexed pool of tasks, built from rows with the env's ``row_to_task``.

    ``data`` may be a path to a user's JSONL file or a list of row dicts; with neither, the env's
    bundled rows are used. ``task_ids`` restricts the pool (unknown ids are an error, not a silent skip).
    """

    def __init__(
        self,
        rows: Sequence[Mapping[str, Any]],
        row_to_task: Callable[[Mapping[str, Any], int], Task],
        task_ids: Iterable[str] | None = None,
    ) -> None:
        tasks = [row_to_task(row, i) for i, row in enumerate(rows)]
        if task_ids is not None:
            wanted = list(task_ids)
            by_id = {t.task_id: t for t in tasks}
            missing = [t for t in wanted if t not in by_id]
            if missing:
                raise ValueError(f"unknown task ids: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
            tasks = [by_id[t] for t in wanted]
        if not tasks:
            raise ValueError("the task pool is empty")
        self._tasks = tasks
        self._index = {t.task_id: i for i, t in enumerate(tasks)}
        self.digest = content_hash(t.row for t in tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def __getitem__(self, index: int) -> Task:  # type: ignore[override]
        return self._tasks[index]

    def by_id(self, task_id: str) -> Task:
        try:
            return self._tasks[self._index[task_id]]
        except KeyError:
            raise KeyError(f"no task with id {task_id!r} in this pool") from None
