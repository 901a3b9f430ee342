"""Replay NeMo Gym's shipped example rollouts through the env: the recorded assistant output as actions, the
stored reward as the expected one. This is how the server table's ``replay`` column is measured and what the
coverage test asserts.

A rollout row is a task row plus ``response`` (a Responses object) and ``reward``; some lack task fields
(mcqa's options, the gymnasium examples' follow-ups), which are joined back from ``example.jsonl`` by prompt.

Servers that score with an LLM judge are replayed with :class:`RecordedJudge`: the judge's answers NeMo Gym
stored in each rollout (``judge_output``, ``judge_evaluations``, ``rubric_evaluations``, ...), given back to the
server's own judge calls. It stands in for judges this machine cannot run (NeMo Gym's configs name 100B+
models); the server's code (prompt, parsing the verdict, the reward) runs for real.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym

from gym_nemo.core.errors import InfraError
from gym_nemo.core.responses import output_text
from gym_nemo.core.task import input_messages, read_jsonl
from gym_nemo.nemo_gym.judge import request_messages
from gym_nemo.nemo_gym.runtime import server_dir
from gym_nemo.nemo_gym.server import drop_nulls
from gym_nemo.rollout.engine import EpisodeTrace, play

#: Fields a rollout row adds to its task row (results of the agent and verifier), dropped before a replay.
_ROLLOUT_KEYS = ("response", "reward", "terminated", "truncated", "info", "_ng_task_index", "_ng_rollout_index")


#: A task row of NeMo Gym's example_single_tool_call server (its ``get_weather`` tool), for tests and benchmarks.
WEATHER_ROW = {
    "responses_create_params": {
        "input": [{"role": "user", "content": "how's the weather in SF?"}],
        "tools": [
            {
                "type": "function",
                "name": "get_weather",
                "description": "",
                "strict": True,
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            }
        ],
    }
}


def _prompt(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    try:
        return [(m["role"], m["content"]) for m in input_messages(row)]
    except ValueError:
        return []


def _prompt_key(row: Mapping[str, Any]) -> str:
    return json.dumps(_prompt(row), ensure_ascii=False)


def rollout_rows(server: str) -> list[dict[str, Any]]:
    """The server's shipped ``example_rollouts.jsonl`` rows (``[]`` when it ships none)."""
    path = server_dir(server) / "data" / "example_rollouts.jsonl"
    return read_jsonl(path) if path.is_file() else []


def task_row(rollout: Mapping[str, Any], examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The task row a rollout played: its ``example.jsonl`` row when one has the same prompt (the rollout's own
    ``responses_create_params`` kept) or when the rollout's prompt extends the row's at its ``_ng_task_index``
    (a gymnasium agent adds the reset observation to the input: the row is then taken as it is), else the
    rollout without what the agent and verifier added (the fields no example row has, where there are rows)."""
    index = rollout.get("_ng_task_index")
    prompt = _prompt(rollout)
    if isinstance(index, int) and 0 <= index < len(examples):
        example = examples[index]  # the exact row (prompts repeat: circle_count, grl_sokoban)
        own = _prompt(example)
        if own == prompt:
            return {**example, "responses_create_params": rollout["responses_create_params"]}
        if own and prompt[: len(own)] == own:
            return dict(example)
    base = {_prompt_key(e): e for e in examples}.get(_prompt_key(rollout))
    if base is None:  # without what the agent and verifier added (fields no example row has: a verdict, say)
        task_keys = {k for e in examples for k in e} or set(rollout)
        return {k: v for k, v in rollout.items() if k not in _ROLLOUT_KEYS and k in task_keys}
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


def _normalized(text: str) -> str:
    return " ".join(text.split())


def _prompt_text(prompt: Any) -> str:
    """A judge prompt's text (a Responses ``input``: a string or messages), whitespace-normalized, for matching."""
    return _normalized("\n".join(m["content"] for m in request_messages({"input": prompt})))


def recorded_judgments(rollout: Mapping[str, Any]) -> list[tuple[str | None, str]]:
    """The judge exchanges NeMo Gym stored in a rollout: ``(prompt or None, the judge's text)``, in call order."""
    found: list[tuple[str | None, str]] = []
    for entry in rollout.get("judge_evaluations") or []:  # equivalence_llm_judge, labbench2_vlm, math_with_autograder
        prompt = (entry.get("responses_create_params") or {}).get("input")
        found.append((_prompt_text(prompt), output_text(entry.get("response") or {})))
    for entry in rollout.get("rubric_evaluations") or []:  # inverse_if
        found.append((_prompt_text(entry.get("judge_prompt") or ""), str(entry.get("judge_response") or "")))
    if isinstance(rollout.get("judge_response"), Mapping):  # aalcr
        prompt = (rollout.get("judge_responses_create_params") or {}).get("input")
        found.append((_prompt_text(prompt), output_text(rollout["judge_response"])))
    for key in ("judge_output", "judgement_gen_base", "judgement_base_gen"):  # simpleqa & co; arena_judge
        if isinstance(rollout.get(key), str):
            found.append((None, rollout[key]))
    return found


class RecordedJudge:
    """A judge (``judge=`` of ``nemo/NeMoGym-v0``) that answers with the judgments NeMo Gym stored in the rollout
    :meth:`load` was given: a request whose prompt is a stored one gets that one's text; any other gets the
    stored texts without a prompt in order (arena_judge's two orders are told apart by where the candidate
    stands). With nothing stored it raises, so the server reports a judge failure rather than a verdict."""

    def __init__(self) -> None:
        self._rollout: Mapping[str, Any] = {}
        self._unprompted: list[str] = []
        self._by_prompt: dict[str, str] = {}
        self.answered = self.missed = 0

    def load(self, rollout: Mapping[str, Any]) -> None:
        """Answer the next judge calls from ``rollout`` (call before each verification of it)."""
        self._rollout = rollout
        judgments = recorded_judgments(rollout)
        self._by_prompt = {prompt: text for prompt, text in judgments if prompt is not None}
        self._unprompted = [text for prompt, text in judgments if prompt is None]

    def __call__(self, messages: list[dict[str, str]]) -> str:
        prompt = _prompt_text(messages)
        text = self._by_prompt.get(prompt)
        if text is None:
            text = self._arena_order(prompt)
        if text is None and self._unprompted:
            text = self._unprompted.pop(0) if len(self._unprompted) > 1 else self._unprompted[0]
        if text is None:
            self.missed += 1
            raise LookupError("the rollout stores no judgment for this judge prompt")
        self.answered += 1
        return text

    def _arena_order(self, prompt: str) -> str | None:
        """arena_judge asks twice at once, candidate first (``judgement_gen_base``) and baseline first."""
        rollout = self._rollout
        baseline = _normalized(str(rollout.get("baseline_answer") or ""))
        candidate = _normalized(output_text(rollout.get("response") or {}))
        if not ("judgement_gen_base" in rollout and baseline and candidate):
            return None
        at_baseline, at_candidate = prompt.find(baseline[:200]), prompt.find(candidate[:200])
        if at_baseline < 0 or at_candidate < 0:
            return None
        return str(rollout["judgement_gen_base" if at_candidate < at_baseline else "judgement_base_gen"])


def replay(env: gym.Env, rollout: Mapping[str, Any], examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Play one rollout through ``env``; returns ``{"reward": summed step rewards, "expected": the stored reward,
    "direct": what the server's /verify says of the stored response itself (verify servers; else None),
    "steps", "infra_error", "terminated", "judge_missed": judge calls a RecordedJudge had no answer for}``.
    ``direct`` tells the adapter's faults (reward != direct) from the data's (direct != expected: the server no
    longer scores its own stored rollout as stored)."""
    row = task_row(rollout, examples)
    unwrapped = env.unwrapped
    judge = getattr(unwrapped, "judge", None)
    recorded = judge if isinstance(judge, RecordedJudge) else None
    direct = None
    if getattr(unwrapped, "server_kind", None) == "verify":
        if recorded is not None:
            recorded.load(rollout)
        body = drop_nulls(row)
        unwrapped.client.new_session(body)
        try:
            reply = unwrapped.client.post("/verify", {**body, "response": drop_nulls(dict(rollout["response"]))})
            direct = float(reply.json()["reward"])
        except InfraError:
            direct = None
    if recorded is not None:
        recorded.load(rollout)
    missed = recorded.missed if recorded is not None else 0
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
        "judge_missed": (recorded.missed if recorded is not None else 0) - missed,
    }


def replayed_as_stored(result: Mapping[str, Any]) -> bool:
    """Whether a replay gave back the stored reward, with no infrastructure error and no judge call unanswered."""
    return (
        abs(result["reward"] - result["expected"]) < 1e-6 and not result["infra_error"] and not result["judge_missed"]
    )


def replay_server(server: str, *, stop_on_infra_error: bool = False, **env_kwargs: Any) -> list[dict[str, Any]]:
    """Replay every shipped rollout of ``server`` through ``gym.make("nemo/NeMoGym-v0", server=server)``
    (up to the first infrastructure error with ``stop_on_infra_error``: a server that times out once will again).
    Pass ``judge=RecordedJudge()`` for a server that scores with an LLM judge."""
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
