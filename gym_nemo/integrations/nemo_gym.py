"""NeMo Gym compatibility: read its task and rollout rows, write ours as its rollout rows, re-score.

NeMo Gym task rows are what every gym_nemo env takes (``responses_create_params`` + verifier fields).
A NeMo Gym *rollout* row is the task row plus ``response`` (an OpenAI Responses object) and ``reward``.
``score(row, server)`` re-scores such a row with the gym_nemo verifier for that resource-server kind;
``join_rollouts`` completes rollout rows that lack verifier fields from their task rows; ``to_rollout_row``
writes a gym_nemo rollout record as a NeMo Gym rollout row and ``read_rollout_rows`` reads them back.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym

from gym_nemo.core.env import TextEnv
from gym_nemo.core.responses import (  # noqa: F401  (response_text: re-exported for old imports)
    last_output_text,
    message_texts,
    output_text,
    response_text,
    transcript_to_response,
)
from gym_nemo.core.task import input_messages, read_jsonl
from gym_nemo.rollout.records import EpisodeRecord
from gym_nemo.verifiers.math import last_boxed

#: NeMo Gym resource-server kind -> the gym_nemo env whose verifier scores it the same way.
SERVER_ENVS: dict[str, str] = {
    "evalplus": "nemo/CodeExec-v0",
    "code_gen": "nemo/CompCoding-v0",
    "instruction_following": "nemo/InstructionFollowing-v0",
    "ifbench": "nemo/InstructionFollowing-v0",
    "math_with_judge": "nemo/Math-v0",  # its judge off (NeMo Gym's default rows); Math-v0's judge= turns ours on
    "polymath": "nemo/Math-v0",  # math_with_judge's verify; weight and language only feed its metrics
    "math_with_code": "nemo/MathTool-v0",  # rows with expected_result: that server's boxed-text rule
    "mcqa": "nemo/MCQA-v0",
    "reasoning_gym": "nemo/ReasoningGym-v0",
}


def math_with_code_text(response: Mapping[str, Any]) -> str:
    """The text NeMo Gym's math_with_code server reads its ``\\boxed{}`` answer from: the last output message
    that has one, else the last tool output (its JSON ``stdout``, or the raw output) that has one, else all
    the text (what a Math-v0-style row on the same env is checked against)."""
    for text in reversed(message_texts(response)):
        if (last_boxed(text) or "").strip():
            return text
    for item in reversed(response.get("output") or []):
        if isinstance(item, Mapping) and item.get("type") == "function_call_output":
            text = str(item.get("output") or "")
            try:
                decoded = json.loads(text)
                text = str(decoded.get("stdout", "")) if isinstance(decoded, Mapping) else text
            except json.JSONDecodeError:
                pass
            if (last_boxed(text) or "").strip():
                return text
    return output_text(response)  # no \boxed{} anywhere: scores 0 for math_with_code rows, as NeMo Gym's None


#: The text each server checks (:func:`output_text` unless named here).
SERVER_TEXT: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "instruction_following": last_output_text,
    "ifbench": last_output_text,
    "math_with_code": math_with_code_text,
}


@functools.cache
def _scoring_env(env_id: str, env_kwargs: str) -> TextEnv:
    return gym.make(env_id, **json.loads(env_kwargs)).unwrapped  # type: ignore[return-value]


@functools.cache
def env_keywords(env_id: str) -> frozenset[str]:
    """The keyword arguments ``env_id``'s class (and its bases) names in ``__init__``."""
    module, _, name = str(gym.spec(env_id).entry_point).partition(":")
    cls = getattr(importlib.import_module(module), name)
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            for param in inspect.signature(vars(klass)["__init__"]).parameters.values():
                if param.name != "self" and param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                    names.add(param.name)
    return frozenset(names)


def score(row: Mapping[str, Any], server: str, **env_kwargs: Any) -> dict[str, Any]:
    """Re-score a NeMo Gym rollout row (task fields + ``response``) with our verifier for ``server``, reading
    the response's text the way that server does (``SERVER_TEXT``).

    ``env_kwargs`` go to the env that verifies (any keyword its class takes, e.g. ``verify_timeout_s=60`` to
    re-score a slow check on a slow machine, ``grading_mode=`` for mcqa); another is a ``ValueError``. Returns
    ``{"reward", "passed", "fraction", "reason", "details", "infra_error", "verifier"}``.

    Examples:
        An ``evalplus`` rollout row (task fields and the model's ``response``), scored by CodeExec's verifier:

        >>> from gym_nemo.integrations.nemo_gym import score
        >>> answer = "```python\\ndef add(a, b):\\n    return a + b\\n```"
        >>> row = {
        ...     "responses_create_params": {"input": [{"role": "user", "content": "Write add(a, b)."}]},
        ...     "verifier_metadata": {"entry_point": "add", "test": "def check(f):\\n    assert f(2, 3) == 5\\n"},
        ...     "response": {"output": [{"type": "message", "role": "assistant",
        ...                              "content": [{"type": "output_text", "text": answer}]}]},
        ... }
        >>> result = score(row, "evalplus")
        >>> result["reward"], result["passed"], result["infra_error"]
        (1.0, True, None)
    """
    try:
        env_id = SERVER_ENVS[server]
    except KeyError:
        raise ValueError(f"no gym_nemo verifier for NeMo Gym server {server!r}; known: {sorted(SERVER_ENVS)}") from None
    unknown = sorted(set(env_kwargs) - env_keywords(env_id))
    if unknown:
        raise ValueError(
            f"{env_id} (NeMo Gym {server!r}) takes no keyword {', '.join(unknown)}; "
            f"it takes: {', '.join(sorted(env_keywords(env_id)))}"
        )
    if "response" not in row:
        raise ValueError("a rollout row needs 'response' (the Responses API object the model produced)")
    env = _scoring_env(env_id, json.dumps(env_kwargs, sort_keys=True))
    task = env.row_to_task(row, 0)
    verdict = env.verify(task, SERVER_TEXT.get(server, output_text)(row["response"]))
    return {**verdict.to_dict(), "verifier": f"{env.verifier_name}@{env.verifier_version}"}


def input_key(row: Mapping[str, Any]) -> str:
    """A row's prompt as normalised ``[(role, text)]`` JSON: the key that joins rollout rows to task rows (rollouts
    add ``"type": "message"`` to each input message and may lack the verifier fields, e.g. code_gen's tests)."""
    return json.dumps([(m["role"], m["content"]) for m in input_messages(row)], ensure_ascii=False)


def join_rollouts(rollouts: Iterable[Mapping[str, Any]], tasks: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each rollout row completed with its task row's fields (the rollout's own values win); raises ``KeyError``
    for a rollout whose prompt matches no task row."""
    by_key = {input_key(task): task for task in tasks}
    joined = []
    for rollout in rollouts:
        key = input_key(rollout)
        if key not in by_key:
            raise KeyError(f"no task row has this rollout's prompt: {key[:200]}")
        joined.append({**by_key[key], **rollout})
    return joined


def to_rollout_row(record: Any) -> dict[str, Any]:
    """A gym_nemo rollout record (an ``EpisodeRecord`` or its JSONL dict) as a NeMo Gym rollout row: the task
    row's fields, ``response`` (built by :func:`transcript_to_response`) and ``reward``, plus gym_nemo's own
    keys under ``gym_nemo`` so nothing is lost."""
    data = record.to_row() if hasattr(record, "to_row") else dict(record)
    task_row = dict(data.get("task_row") or {})
    if not task_row:  # a JSONL record: the task row's fields sit at the top level beside ours
        task_row = {k: v for k, v in data.items() if k not in _RECORD_KEYS}
    extra = {k: data[k] for k in _RECORD_KEYS if k in data and k not in ("messages", "reward", "task_row")}
    response = transcript_to_response(data.get("messages") or [], model=str(data.get("policy", "")))
    return {**task_row, "response": response, "reward": float(data.get("reward", 0.0)), "gym_nemo": extra}


def read_rollout_rows(path: str | Path) -> list[dict[str, Any]]:
    """NeMo Gym rollout rows (ours or NeMo Gym's) from a JSONL file; each must have ``response``."""
    rows = read_jsonl(path)
    for lineno, row in enumerate(rows, 1):
        if "response" not in row:
            raise ValueError(f"{path}: row {lineno} has no 'response'; not a rollout row")
    return rows


# The keys an EpisodeRecord adds to the task row (everything else in a record is the row itself).
_RECORD_KEYS = tuple(f.name for f in dataclasses.fields(EpisodeRecord))
