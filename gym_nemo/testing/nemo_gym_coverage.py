"""Replay NeMo Gym's shipped example rollouts through the env: the recorded assistant output as actions, the
stored reward as the expected one. This is how the server table's ``replay`` column is measured and what the
coverage test asserts.

A rollout row is a task row plus ``response`` (a Responses object) and ``reward``; some lack task fields
(mcqa's options, the gymnasium examples' follow-ups), which are joined back from ``example.jsonl`` by prompt.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym

from gym_nemo.core.errors import InfraError
from gym_nemo.core.task import input_messages, read_jsonl
from gym_nemo.nemo_gym.runtime import server_dir
from gym_nemo.nemo_gym.server import drop_nulls
from gym_nemo.rollout.engine import EpisodeTrace, play

#: Fields a rollout row adds to its task row (results of the agent and verifier), dropped before a replay.
_ROLLOUT_KEYS = ("response", "reward", "terminated", "truncated", "info", "_ng_task_index", "_ng_rollout_index")


def _prompt_key(row: Mapping[str, Any]) -> str:
    try:
        return json.dumps([(m["role"], m["content"]) for m in input_messages(row)], ensure_ascii=False)
    except ValueError:
        return ""


def rollout_rows(server: str) -> list[dict[str, Any]]:
    """The server's shipped ``example_rollouts.jsonl`` rows (``[]`` when it ships none)."""
    path = server_dir(server) / "data" / "example_rollouts.jsonl"
    return read_jsonl(path) if path.is_file() else []


def task_row(rollout: Mapping[str, Any], examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The task row a rollout played: its ``example.jsonl`` row when one has the same prompt (the rollout's own
    ``responses_create_params`` kept), else the rollout without what the agent and verifier added."""
    index = rollout.get("_ng_task_index")
    by_prompt = {_prompt_key(e): e for e in examples}
    if isinstance(index, int) and 0 <= index < len(examples) and _prompt_key(examples[index]) == _prompt_key(rollout):
        base = examples[index]  # the exact row (prompts repeat: circle_count)
    else:
        base = by_prompt.get(_prompt_key(rollout))
    if base is None:
        return {k: v for k, v in rollout.items() if k not in _ROLLOUT_KEYS}
    return {**base, "responses_create_params": rollout["responses_create_params"]}


def recorded_actions(response: Mapping[str, Any]) -> list[str]:
    """The assistant turns of a recorded response as TextEnv actions: each turn's message text, then its
    function calls as ``<tool_call>`` tags (reasoning items are not part of an action)."""
    turns: list[list[str]] = []
    open_turn = False
    for item in response.get("output") or []:
        kind, role = item.get("type", "message"), item.get("role", "assistant")
        if kind == "reasoning":
            continue
        if kind == "function_call" or (kind == "message" and role == "assistant"):
            if not open_turn:
                turns.append([])
                open_turn = True
            if kind == "function_call":
                try:
                    arguments = json.loads(item.get("arguments") or "{}")
                except json.JSONDecodeError:
                    arguments = item.get("arguments")
                call = {"name": item.get("name"), "arguments": arguments}
                turns[-1].append(f"<tool_call>\n{json.dumps(call, ensure_ascii=False)}\n</tool_call>")
            else:
                content = item.get("content") or []
                text = content if isinstance(content, str) else "".join(p.get("text") or "" for p in content)
                turns[-1].append(text)
        else:
            open_turn = False
    return ["\n".join(t for t in turn if t) for turn in turns]


def replay(env: gym.Env, rollout: Mapping[str, Any], examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Play one rollout through ``env``; returns ``{"reward": summed step rewards, "expected": the stored reward,
    "direct": what the server's /verify says of the stored response itself (verify servers; else None),
    "steps", "infra_error", "terminated"}``. ``direct`` tells the adapter's faults (reward != direct) from the
    data's (direct != expected: the server no longer scores its own stored rollout as stored)."""
    row = task_row(rollout, examples)
    unwrapped = env.unwrapped
    direct = None
    if getattr(unwrapped, "server_kind", None) == "verify":
        body = drop_nulls(row)
        unwrapped.client.new_session(body)
        try:
            reply = unwrapped.client.post("/verify", {**body, "response": drop_nulls(dict(rollout["response"]))})
            direct = float(reply.json()["reward"])
        except InfraError:
            direct = None
    actions = iter(recorded_actions(rollout["response"]))  # the engine plays them; None when they run out
    trace = EpisodeTrace(str(getattr(env.spec, "id", "")), "recorded")
    record = play(env, lambda _: next(actions, None), trace, options={"task": row})
    assert record is not None
    return {
        "reward": record.reward,
        "expected": float(rollout.get("reward") or 0.0),
        "direct": direct,
        "steps": len(record.step_rewards),
        "terminated": record.terminated,
        "infra_error": record.infra_error,
    }


def replay_server(server: str, *, stop_on_infra_error: bool = False, **env_kwargs: Any) -> list[dict[str, Any]]:
    """Replay every shipped rollout of ``server`` through ``gym.make("nemo/NeMoGym-v0", server=server)``
    (up to the first infrastructure error with ``stop_on_infra_error``: a server that times out once will again)."""
    examples_path: Path = server_dir(server) / "data" / "example.jsonl"
    examples = read_jsonl(examples_path) if examples_path.is_file() else []
    env = gym.make("nemo/NeMoGym-v0", server=server, max_turns=64, max_episode_steps=64, **env_kwargs)
    try:
        results = []
        for rollout in rollout_rows(server):
            results.append(replay(env, rollout, examples))
            if stop_on_infra_error and results[-1]["infra_error"]:
                break
        return results
    finally:
        env.close()
