"""``nemo/NeMoGym-v0`` (and ``nemo-gym/<server>-v0``): any NeMo Gym resources server, run for real, as a TextEnv.

The env is a client of NeMo Gym's own server process (``gym_nemo.nemo_gym``: one per server per machine,
started on demand from the NeMo Gym venv that ``gym-nemo nemo-gym setup`` makes). What an episode does
depends on the kind of server, read from the checked-in table of the pinned wheel's servers:

* ``verify`` servers (NeMo Gym's ``simple_agent``): ``reset`` posts the row to ``/seed_session`` (a fresh
  session cookie per episode); the row's ``responses_create_params.tools`` are the env's tools, and a step
  with tool calls posts each call's arguments to the server's route of that name in the episode's session,
  the reply's body being the tool result (as NeMo Gym's agent shows it to the model). A step without tool
  calls is the final answer: the whole transcript goes to ``/verify`` as a NeMo Gym Responses object
  (:func:`gym_nemo.core.responses.transcript_to_response`), and its ``reward`` is the step's reward.
* ``non_executing`` servers (NeMo Gym's ``non_executing_simple_agent``: the model's tool calls are its answer,
  e.g. structured outputs): the first message is verified as it is, tool calls included.
* ``gymnasium`` servers (NeMo Gym's ``GymnasiumServer``: blackjack, grl_sokoban, ...): ``reset`` posts to
  ``/reset``, every step posts that turn's output to ``/step``, whose reward, ``terminated`` and
  ``truncated`` are the step's.

Infrastructure failures (the server unreachable or killed, any 4xx/5xx except a tool route the server lacks
and a gymnasium server refusing a move) end the episode with ``truncated=True`` and ``info["infra_error"]``,
never a reward; the next episode finds a restarted server. A move a gymnasium server refuses (400 at
``/step``: "Unable to parse action") is not played and the observation says why, as in gym_nemo's own games.
Rows of the wrong shape raise ``ValueError`` naming the field.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
from gymnasium.error import ResetNeeded

from gym_nemo.core.env import TextEnv, _sanitize
from gym_nemo.core.errors import InfraError
from gym_nemo.core.responses import transcript_to_response
from gym_nemo.core.task import Task, input_messages
from gym_nemo.core.tools import Tool
from gym_nemo.core.verdict import Verdict
from gym_nemo.nemo_gym.judge import JudgeServer
from gym_nemo.nemo_gym.runtime import NEMO_GYM_VERSION, RuntimeMissing, package_dir, venv_dir
from gym_nemo.nemo_gym.server import NeMoGymClient, ServerHTTPError, drop_nulls
from gym_nemo.nemo_gym.table import server_entry
from gym_nemo.verifiers.llm_judge import JudgeConfig, LLMJudge

#: Keys of a verify reply that echo the request rather than report on it.
_ECHOED = ("responses_create_params", "response", "reward")


def response_object(messages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A ``NeMoGymResponse`` for a chat: the shared conversion, env feedback as plain input messages (as NeMo Gym's
    gymnasium agent writes them) and the fields OpenAI's ``Response`` model requires."""
    response = transcript_to_response(messages)
    response.update(parallel_tool_calls=True, tool_choice="auto", tools=[])
    for n, item in enumerate(response["output"]):
        if item.get("type") == "message" and item.get("role") != "assistant":
            text = "".join(part.get("text", "") for part in item.get("content") or [])
            # content as parts, not a bare string: openai's Response.output_text reads each part's type
            response["output"][n] = {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": text}],
            }
    return response


def _tool(schema: Mapping[str, Any], index: int, call: Any) -> Tool:
    """A gym_nemo Tool from a Responses-API function tool (flat, or nested under ``function`` as chat uses)."""
    spec = schema.get("function") if isinstance(schema.get("function"), Mapping) else schema
    name = spec.get("name")
    if schema.get("type", "function") != "function" or not isinstance(name, str) or not name:
        raise ValueError(f'responses_create_params.tools[{index}] must be a function tool with a "name"')
    parameters = spec.get("parameters") or {"type": "object", "properties": {}}
    try:
        jsonschema.Draft202012Validator.check_schema(parameters)
    except jsonschema.SchemaError:
        parameters = {"type": "object"}  # the server validates what it receives; ours cannot check this schema
    return Tool(name, str(spec.get("description") or ""), parameters, lambda **args: call(name, args))


def _as_messages(items: Any) -> Any:
    """A Responses ``input`` with earlier turns' ``function_call``/``function_call_output`` items (rows that replay
    a conversation) as chat messages: the call as a ``<tool_call>`` in an assistant message, its output a tool
    message; reasoning items dropped. Anything else is left for :func:`input_messages` to accept or reject."""
    if not isinstance(items, list):
        return items
    messages: list[Any] = []
    for item in items:
        kind = item.get("type") if isinstance(item, Mapping) else None
        if kind == "function_call":
            try:
                arguments = json.loads(item.get("arguments") or "{}")
            except json.JSONDecodeError:
                arguments = item.get("arguments")
            call = json.dumps({"name": item.get("name"), "arguments": arguments}, ensure_ascii=False)
            messages.append({"role": "assistant", "content": f"<tool_call>\n{call}\n</tool_call>"})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "content": str(item.get("output") or "")})
        elif kind != "reasoning":
            messages.append(item)
    return messages


#: One judge server per judge in a process, shared by its envs (so they share one NeMo Gym server process too).
_JUDGE_SERVERS: dict[Any, JudgeServer] = {}


def judge_server(judge: JudgeConfig | Mapping[str, Any] | Callable[[list[dict[str, str]]], str]) -> JudgeServer:
    """The process's :class:`JudgeServer` for a ``judge=`` value: an OpenAI-compatible endpoint
    (``{"base_url", "model", ...}`` or a :class:`JudgeConfig`, asked through :class:`LLMJudge`) or a callable
    ``(messages) -> str``. ``TypeError`` for anything else."""
    if isinstance(judge, (Mapping, JudgeConfig)):
        key: Any = JudgeConfig.coerce(judge)
        answer = LLMJudge(key).chat
    elif callable(judge):
        key = answer = judge
    else:
        raise TypeError(
            "judge must be {'base_url': ..., 'model': ...} (an OpenAI-compatible endpoint), a JudgeConfig or a "
            f"callable (messages) -> str, got {type(judge).__name__}"
        )
    key = (os.getpid(), key)  # a forked worker serves its own judge (the parent's thread is not in it)
    if key not in _JUDGE_SERVERS:
        _JUDGE_SERVERS[key] = JudgeServer(answer)
    return _JUDGE_SERVERS[key]


def _detail(exc: ServerHTTPError) -> str:
    """The ``detail`` of a FastAPI error body (the body itself when it has none)."""
    try:
        detail = json.loads(exc.body).get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail) if detail else exc.body[:500]


def _refused_move(exc: ServerHTTPError) -> bool:
    """Whether a gymnasium server's error at ``/step`` refuses the move itself (400 "Unable to parse action",
    "Invalid action identifier": grl_sokoban, grl_tetris) rather than failing (a lost session, a 5xx)."""
    return exc.status == 400 and "session" not in _detail(exc).lower()


class NeMoGymEnv(TextEnv):
    """NeMo Gym's resources server ``server`` behind the TextEnv contract (see the module docstring).

    Args (beyond :class:`TextEnv`'s):
        server: the server's folder name in NeMo Gym's ``resources_servers/`` (``gym-nemo nemo-gym list``).
        data: task rows; default the server's shipped ``data/example.jsonl``.
        server_config: overrides of the server's config fields (each distinct config is its own process).
        request_timeout_s: the longest one request to the server may take.
        start_timeout_s: the longest the server process may take to start answering.
        verify_after_steps: verify the transcript after this many assistant messages even when the last one
            called tools, as NeMo Gym's agent does at its ``max_steps`` (default: that agent's, from the table).
        judge: the LLM judge of a server that scores with one (status "needs an LLM judge"; required there):
            ``{"base_url": ..., "model": ...}`` of an OpenAI-compatible endpoint, or a callable
            ``(messages) -> str``. The server's judge model server is pointed at a
            :class:`~gym_nemo.nemo_gym.judge.JudgeServer` that asks it.
    """

    verifier_name = "nemo_gym"
    verifier_version = NEMO_GYM_VERSION
    default_max_turns = 16

    def __init__(
        self,
        server: str,
        *,
        data: str | Path | Sequence[Mapping[str, Any]] | None = None,
        server_config: Mapping[str, Any] | None = None,
        request_timeout_s: float = 300.0,
        start_timeout_s: float = 300.0,
        verify_after_steps: int | None = None,
        judge: JudgeConfig | Mapping[str, Any] | Callable[[list[dict[str, str]]], str] | None = None,
        **kwargs: Any,
    ) -> None:
        entry = server_entry(server)
        if judge is None and entry.get("judge_refs"):
            raise ValueError(
                f"NeMo Gym server {server!r} scores with an LLM judge: pass judge={{'base_url': ..., 'model': ...}} "
                "(an OpenAI-compatible endpoint) or a callable (messages) -> str"
            )
        self.judge = judge
        model_url = judge_server(judge).url if judge is not None else None
        self.verify_after_steps = verify_after_steps or entry.get("max_steps")
        self.server = server
        self.server_kind = str(entry["kind"])
        self.verifier_name = f"nemo_gym:{server}"
        if data is None:
            try:
                data = package_dir() / "resources_servers" / server / "data" / "example.jsonl"
            except RuntimeMissing:
                raise RuntimeMissing(
                    f"NeMo Gym server {server!r} needs the NeMo Gym runtime, not installed in {venv_dir()}; "
                    f"run `gym-nemo nemo-gym setup {server}`"
                ) from None
            if not Path(data).is_file():
                raise ValueError(f"NeMo Gym server {server!r} ships no data/example.jsonl; pass data=")
        self.client = NeMoGymClient(
            server, server_config, model_url=model_url, timeout_s=request_timeout_s, start_timeout_s=start_timeout_s
        )
        self._reset_error: str | None = None
        self._prompt_len = 0
        super().__init__(data=data, **kwargs)
        self.reward_range = (-math.inf, math.inf)  # NeMo Gym rewards are the server's (blackjack pays -1)

    @classmethod
    def row_to_task(cls, row: Mapping[str, Any], index: int) -> Task:
        if not isinstance(row, Mapping):
            raise ValueError(f"task row {index} must be a JSON object, got {type(row).__name__}")
        params = row.get("responses_create_params")
        if not isinstance(params, Mapping):
            raise ValueError(
                f'task row {index}: "responses_create_params" must be an object with the prompt in "input"'
            )
        try:
            messages = input_messages({"responses_create_params": {"input": _as_messages(params.get("input"))}})
        except ValueError as exc:
            raise ValueError(f"task row {index}: responses_create_params.input: {exc}") from None
        tools = params.get("tools")
        if tools is not None and not (isinstance(tools, list) and all(isinstance(t, Mapping) for t in tools)):
            raise ValueError(f"task row {index}: responses_create_params.tools must be a list of tool objects")
        for n, schema in enumerate(tools or []):
            _tool(schema, n, None)  # raises naming the tool at fault
        meta = row.get("verifier_metadata") if isinstance(row.get("verifier_metadata"), Mapping) else {}
        task_id = row.get("task_id") or row.get("id") or meta.get("task_id") or f"row-{index}"
        return Task(task_id=str(task_id), messages=tuple(messages), hidden=drop_nulls(dict(row)), row=row)

    # ------------------------------------------------------------------ episode
    def _select_task(self, options: Mapping[str, Any]) -> Task:
        task = super()._select_task(options)
        tools = task.row["responses_create_params"].get("tools") or []
        self._tools = {t.name: t for t in (_tool(s, n, self._call_tool) for n, s in enumerate(tools))}
        return task

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        observation, info = super().reset(seed=seed, options=options)
        assert self._task is not None
        self._reset_error = None
        route = "/reset" if self.server_kind == "gymnasium" else "/seed_session"
        try:
            reply = self.client.new_session(self._task.hidden, route)
        except InfraError as exc:
            self._reset_error = str(exc)
            info["infra_error"] = self._reset_error
            return observation, info
        if self.server_kind == "gymnasium":
            first = (reply.json() if reply is not None else {}).get("observation")
            if first:
                self._messages.append({"role": "user", "content": str(first)})
                observation = f"{observation}\n\n{first}"
                info["messages"] = self.messages
        self._prompt_len = len(self._messages)  # the episode's output starts here (the row may hold earlier turns)
        return self._cap(observation), info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._task is None:
            raise ResetNeeded("call reset() before step()")
        if self._reset_error is not None and not self._done:
            self._done = True
            info = {"turn": 1, "task_id": self._task.task_id, "infra_error": self._reset_error}
            info.update(reward_components={}, episode_return=0.0, messages=self.messages, task_row=dict(self._task.row))
            return f"[infrastructure error] {self._reset_error}", 0.0, False, True, info
        if self.server_kind == "verify":
            return self._step_verify_at_limit(*super().step(action))
        if self._done:
            raise ResetNeeded("the episode is over; call reset() before step()")
        return self._step_whole_message(action)

    def _step_verify_at_limit(
        self, reply: str, reward: float, terminated: bool, truncated: bool, info: dict[str, Any]
    ) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """After ``verify_after_steps`` messages the transcript is verified even if the last one called tools."""
        limit = self.verify_after_steps
        if terminated or truncated or not limit or self._turn < limit or "infra_error" in info:
            return reply, reward, terminated, truncated, info
        assert self._task is not None
        components: dict[str, float] = {}
        verdict_reply, terminated, truncated = self._submit("", components, info)
        reward += components.get("verifier", 0.0)
        self._return += components.get("verifier", 0.0)
        self._done = True
        terminated = terminated or not truncated
        info.update(episode_return=self._return, messages=self.messages, task_row=dict(self._task.row))
        info["reward_components"] = {**info.get("reward_components", {}), **components}
        info["versions"] = self.versions()
        return self._cap(f"{reply}\n\n[{limit} steps: verified]\n{verdict_reply}"), reward, terminated, truncated, info

    def _step_whole_message(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """A step of a gymnasium or non-executing server: the whole message goes to the server as it is."""
        assert self._task is not None
        self._turn += 1
        text, note = _sanitize(action)
        self._messages.append({"role": "assistant", "content": text})
        info: dict[str, Any] = {"turn": self._turn, "task_id": self._task.task_id}
        terminated = truncated = False
        reward = 0.0
        if self.server_kind == "non_executing":
            components: dict[str, float] = {}
            reply, terminated, truncated = self._submit(text, components, info)
            reward = components.get("verifier", 0.0)
        else:
            first = len(self._messages) - 1
            body = {**self._task.hidden, "response": response_object(self._messages[first:])}
            try:
                data = self.client.post("/step", body).json()
            except ServerHTTPError as exc:
                if _refused_move(exc):  # not played (the world is as it was); the observation says why
                    info["invalid_action"] = _detail(exc)
                    reply = f"[not a valid move: the server refused it] {_detail(exc)}"
                    self._messages.append({"role": "user", "content": reply})
                else:
                    reply, truncated, info["infra_error"] = f"[infrastructure error] {exc}", True, str(exc)
            except InfraError as exc:
                reply, truncated, info["infra_error"] = f"[infrastructure error] {exc}", True, str(exc)
            else:
                reward = float(data.get("reward") or 0.0)
                terminated, truncated = bool(data.get("terminated")), bool(data.get("truncated"))
                info["step_info"] = data.get("info") or {}
                outputs = [str(o.get("output", "")) for o in info["step_info"].get("tool_outputs", [])]
                for output in outputs:
                    self._messages.append({"role": "tool", "name": "step", "content": output})
                reply = "\n\n".join([*outputs, str(data.get("observation") or "")]).strip()
                if data.get("observation"):
                    self._messages.append({"role": "user", "content": str(data["observation"])})
        if note is not None:
            reply = f"[note] {note}.\n{reply}"
        if not (terminated or truncated) and self._turn >= self.max_turns:
            truncated = True
            reply = f"{reply}\n\n[turn limit of {self.max_turns} reached]"
        self._return += reward
        self._done = terminated or truncated
        info.update(reward_components={"server": reward}, episode_return=self._return, messages=self.messages)
        if self._done:
            info["task_row"] = dict(self._task.row)
            info["versions"] = self.versions()
        return self._cap(reply), reward, terminated, truncated, info

    def _call_tool(self, name: str, arguments: Mapping[str, Any]) -> str:
        try:
            return self.client.post(f"/{name}", dict(arguments)).text
        except ServerHTTPError as exc:
            if exc.status == 404:  # no route for this tool on the server: NeMo Gym's agent shows the model the body
                return exc.body
            raise

    def verify(self, task: Task, answer: str) -> Verdict:
        body = {**task.hidden, "response": response_object(self._messages[self._prompt_len :])}
        data = self.client.post("/verify", body).json()  # InfraError -> TextEnv reports an infra failure
        reward = data.get("reward")
        if not isinstance(reward, (int, float)) or not math.isfinite(reward):
            raise InfraError(f"NeMo Gym server {self.server!r} answered /verify without a finite reward: {reward!r}")
        details = {k: v for k, v in data.items() if k not in _ECHOED}
        return Verdict(reward=float(reward), passed=reward >= 1.0, reason=f"reward {reward:g}", details=details)

    def close(self) -> None:
        self.client.close()
        super().close()
