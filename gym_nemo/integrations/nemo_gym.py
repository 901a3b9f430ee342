"""NeMo Gym compatibility: read its task and rollout rows, write ours as its rollout rows, re-score.

NeMo Gym task rows are what every gym_nemo env takes (``responses_create_params`` + verifier fields).
A NeMo Gym *rollout* row is the task row plus ``response`` (an OpenAI Responses object) and ``reward``.
``score(row, server)`` re-scores such a row with the gym_nemo verifier for that resource-server kind.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import gymnasium as gym

from gym_nemo.core.env import TextEnv

#: NeMo Gym resource-server kind -> the gym_nemo env whose verifier scores it the same way.
SERVER_ENVS: dict[str, str] = {
    "evalplus": "nemo/CodeExec-v0",
}


def response_text(response: Mapping[str, Any]) -> str:
    """The final assistant text of a Responses API object (the last output message's text parts)."""
    for item in reversed(response.get("output") or []):
        if item.get("type", "message") == "message" and item.get("role", "assistant") == "assistant":
            parts = item.get("content") or []
            if isinstance(parts, str):
                return parts
            return "".join(p.get("text", "") for p in parts if p.get("type") in ("output_text", "text", None))
    return ""


@functools.cache
def _scoring_env(env_id: str) -> TextEnv:
    return gym.make(env_id).unwrapped  # type: ignore[return-value]


def score(row: Mapping[str, Any], server: str) -> dict[str, Any]:
    """Re-score a NeMo Gym rollout row (task fields + ``response``) with our verifier for ``server``.

    Returns ``{"reward", "passed", "fraction", "reason", "details", "infra_error", "verifier"}``.
    """
    try:
        env_id = SERVER_ENVS[server]
    except KeyError:
        raise ValueError(f"no gym_nemo verifier for NeMo Gym server {server!r}; known: {sorted(SERVER_ENVS)}") from None
    if "response" not in row:
        raise ValueError("a rollout row needs 'response' (the Responses API object the model produced)")
    env = _scoring_env(env_id)
    task = env.row_to_task(row, 0)
    verdict = env.verify(task, response_text(row["response"]))
    return {**verdict.to_dict(), "verifier": f"{env.verifier_name}@{env.verifier_version}"}
