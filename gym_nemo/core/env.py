"""``TextEnv``: the Gymnasium contract every ``nemo/*`` environment shares.

An episode is a chat. ``reset`` picks a task and returns its prompt; each ``step`` takes the assistant's
whole message. A message with tool calls gets the tools' results back (reward 0 in sparse mode); a
message without tool calls is the final answer, which the env's verifier scores. Subclasses supply only
the task family: rows (``bundled_rows``/``row_to_task``, with ``task_settings`` for envs whose constructor
arguments choose the bundled tasks), ``tools`` and ``verify``. Everything else, from
bad-input handling to the reward contract, lives here once:

* ``reward`` is the step's reward and ``info["reward_components"]`` its parts; ``info["episode_return"]``
  the running sum; ``info["verdict"]`` the verifier's verdict on steps that verified an answer.
* Infrastructure failure (sandbox or verifier down) ends the episode with ``truncated=True`` and
  ``info["infra_error"]``; it is never scored as a wrong answer.
* Every string is a legal action: empty, huge, malformed tool calls, unknown tools, wrong argument
  types, lone surrogates, NUL bytes. Each gets an explanatory observation and a defined reward.
* ``info`` holds nothing time-dependent, so stepping is deterministic given the seed and actions.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
from gymnasium.error import ResetNeeded

from gym_nemo._version import __version__
from gym_nemo.core.errors import InfraError
from gym_nemo.core.spaces import UnicodeText
from gym_nemo.core.task import Message, Task, TaskSource, read_jsonl
from gym_nemo.core.tool_calls import ToolCall, parse_tool_calls
from gym_nemo.core.tools import Tool, ToolArgumentError
from gym_nemo.core.verdict import Verdict

#: Penalty per malformed step in ``reward_mode="dense"`` (empty or oversized message, undecodable
#: tool call, unknown tool, invalid arguments). Sparse mode pays only the verifier.
FORMAT_PENALTY = 0.1

TOOL_PROMPT = """# Tools

You may call one or more functions to help with the task. The functions are described in JSON below:
<tools>
{tools}
</tools>

To call a function, write a JSON object with the function name and arguments inside <tool_call></tool_call> tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>
The results come back in the next message. A message with no tool call is your final answer."""


def _freeze(settings: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Task settings as a hashable key (lists become tuples)."""
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(settings.items()))


@functools.cache
def _shared_pool(cls: type[TextEnv], settings: tuple[tuple[str, Any], ...]) -> TaskSource:
    return TaskSource(cls.bundled_rows(**dict(settings)), cls.row_to_task)


def _sanitize(action: Any) -> tuple[str, str | None]:
    """Coerce an action to a valid Unicode ``str``; return it and a note if it had to be changed."""
    if isinstance(action, bytes):
        return action.decode("utf-8", "replace"), "the action was bytes; decoded as UTF-8"
    if not isinstance(action, str):
        return "", f"the action must be a str, got {type(action).__name__}"
    try:
        action.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates cannot be encoded or tokenized; replace them with U+FFFD.
        fixed = action.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return fixed, "the message contained unpaired surrogates; they were replaced with U+FFFD"
    return action, None


class TextEnv(gym.Env[str, str]):
    """Base class of every gym_nemo environment (see the module docstring for the contract).

    Args:
        data: a path to a JSONL file of task rows, or a list of row dicts; default: the bundled tasks.
        task_ids: restrict the pool to these task ids.
        max_turns: assistant messages per episode before it is truncated.
        max_attempts: final answers allowed; a wrong one gets feedback and another turn while > 1.
        reward_mode: ``"sparse"`` (verifier reward only) or ``"dense"`` (adds ``-FORMAT_PENALTY`` for
            each malformed step).
        system_prompt: replaces the env's default system prompt (the tool list is still appended).
        max_action_chars: longer messages are not processed; the policy is told so.
        max_observation_chars: observations longer than this are cut, with a note saying so.
        render_mode: ``"ansi"`` (``render()`` returns the transcript) or ``"human"`` (prints it).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "human"], "render_fps": 4}

    #: Name and version of the verifier, recorded with every rollout.
    verifier_name: ClassVar[str] = "none"
    verifier_version: ClassVar[str] = "0"
    default_max_turns: ClassVar[int] = 8
    default_system_prompt: ClassVar[str] = "You are a helpful assistant."

    def __init__(
        self,
        *,
        data: str | Path | Sequence[Mapping[str, Any]] | None = None,
        task_ids: Sequence[str] | None = None,
        max_turns: int | None = None,
        max_attempts: int = 1,
        reward_mode: str = "sparse",
        system_prompt: str | None = None,
        max_action_chars: int = 200_000,
        max_observation_chars: int = 64_000,
        render_mode: str | None = None,
    ) -> None:
        if reward_mode not in ("sparse", "dense"):
            raise ValueError(f"reward_mode must be 'sparse' or 'dense', got {reward_mode!r}")
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.max_turns = max_turns or self.default_max_turns
        if self.max_turns < max_attempts:
            raise ValueError("max_turns must be >= max_attempts")
        self.max_attempts = max_attempts
        self.reward_mode = reward_mode
        self.render_mode = render_mode
        self.max_action_chars = max_action_chars
        self.max_observation_chars = max_observation_chars
        self._system_prompt = system_prompt

        self.tasks = self.load_tasks(data, task_ids, **self.task_settings())
        self._tools: dict[str, Tool] = {t.name: t for t in self.make_tools()}

        self.observation_space = UnicodeText(max_observation_chars + 4_096)
        self.action_space = UnicodeText(max_action_chars)
        self.reward_range = (-FORMAT_PENALTY if reward_mode == "dense" else 0.0, 1.0)

        self._task: Task | None = None
        self._messages: list[Message] = []
        self._turn = 0
        self._attempts = 0
        self._return = 0.0
        self._done = False

    @classmethod
    def load_tasks(
        cls,
        data: str | Path | Sequence[Mapping[str, Any]] | TaskSource | None = None,
        task_ids: Sequence[str] | None = None,
        **settings: Any,
    ) -> TaskSource:
        """The task pool an env built with these arguments uses (without building the env).

        ``settings`` are the env's task settings (see :meth:`task_settings`, e.g. MCQA's ``subjects``): they go
        to :meth:`bundled_rows` and are not used with ``data``. ``data`` may also be an already-built
        :class:`TaskSource`, which is then shared, not rebuilt: a server hosting thousands of sessions of one
        env builds the pool once (``gym_nemo.serve``)."""
        if isinstance(data, TaskSource):
            return data if task_ids is None else TaskSource([t.row for t in data], cls.row_to_task, task_ids)
        if data is None:
            if cls.share_bundled_pool and task_ids is None:
                return _shared_pool(cls, _freeze(settings))
            rows: Sequence[Mapping[str, Any]] = cls.bundled_rows(**settings)
        elif isinstance(data, (str, Path)):
            rows = read_jsonl(data)
        else:
            rows = list(data)
        return TaskSource(rows, cls.row_to_task, task_ids)

    # ------------------------------------------------------------------ hooks for subclasses
    #: Build the bundled pool once per process and settings, shared by every env of the class (it is read-only):
    #: for large pools (MCQA's 14,042 tasks take ~0.2 s to build).
    share_bundled_pool: ClassVar[bool] = False

    def task_settings(self) -> dict[str, Any]:
        """The constructor arguments that choose this env's bundled tasks (Math's ``sources`` and ``language``,
        ReasoningGym's ``dataset``, ``size``, ``seed`` and config), passed to :meth:`bundled_rows` as keywords.
        Subclasses set them on ``self`` before calling ``TextEnv.__init__``. None by default."""
        return {}

    @classmethod
    def bundled_rows(cls, **settings: Any) -> Sequence[Mapping[str, Any]]:
        """The env's own task rows (NeMo Gym format), chosen by the task settings (:meth:`task_settings`)."""
        raise NotImplementedError(f"{cls.__name__} bundles no tasks; pass data=...")

    @classmethod
    def row_to_task(cls, row: Mapping[str, Any], index: int) -> Task:
        """Turn a task row into a :class:`Task`; raise ``ValueError`` naming what is missing."""
        raise NotImplementedError

    def make_tools(self) -> Sequence[Tool]:
        """The tools this env offers (none by default)."""
        return ()

    def verify(self, task: Task, answer: str) -> Verdict:
        """Score a final answer. Pure in (task, answer); return ``Verdict.infra_failure`` if it cannot."""
        raise NotImplementedError

    def feedback(self, verdict: Verdict, attempts_left: int) -> str:
        """What the policy is told after a wrong answer when it has attempts left."""
        return (
            f"Your answer was checked: {verdict.reason or 'it is not correct'}. "
            f"You have {attempts_left} attempt(s) left."
        )

    # ------------------------------------------------------------------ public helpers
    @property
    def tools(self) -> list[dict[str, Any]]:
        """OpenAI function schemas of the env's tools."""
        return [t.schema for t in self._tools.values()]

    @property
    def task(self) -> Task | None:
        return self._task

    @property
    def messages(self) -> list[Message]:
        return [dict(m) for m in self._messages]

    def system_prompt(self) -> str:
        prompt = self._system_prompt if self._system_prompt is not None else self.default_system_prompt
        if self._tools:
            schemas = "\n".join(json.dumps(s, ensure_ascii=False) for s in self.tools)
            prompt = f"{prompt}\n\n{TOOL_PROMPT.format(tools=schemas)}".strip()
        return prompt

    def versions(self) -> dict[str, str]:
        """What produced this env's rewards, for rollout records."""
        spec_id = self.spec.id if self.spec is not None else type(self).__name__
        versions = {
            "gym_nemo": __version__,
            "env": spec_id,
            "verifier": f"{self.verifier_name}@{self.verifier_version}",
            "tasks": self.tasks.digest,
        }
        sandbox = getattr(self, "sandbox", None)  # envs that run code name the sandbox (and image) they used
        if sandbox is not None and hasattr(sandbox, "version"):
            versions["sandbox"] = str(sandbox.version)
        return versions

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start an episode. ``options``: ``{"task": row}``, ``{"task_id": id}`` or ``{"task_index": i}``."""
        super().reset(seed=seed)
        self._task = self._select_task(options or {})
        system = [{"role": "system", "content": self.system_prompt()}]
        prompt = list(self._task.messages)
        if prompt and prompt[0]["role"] == "system":  # the row brings its own system prompt
            system = [{"role": "system", "content": f"{prompt[0]['content']}\n\n{system[0]['content']}".strip()}]
            prompt = prompt[1:]
        self._messages = [*system, *(dict(m) for m in prompt)]
        self._turn = self._attempts = 0
        self._return = 0.0
        self._done = False
        observation = "\n\n".join(m["content"] for m in self._messages)
        info = {"task_id": self._task.task_id, "messages": self.messages, "tools": self.tools, "turn": 0}
        self._render_if_human()
        return self._cap(observation), info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._task is None:
            raise ResetNeeded("call reset() before step()")
        if self._done:
            raise ResetNeeded("the episode is over; call reset() before step()")
        self._turn += 1
        text, note = _sanitize(action)
        self._messages.append({"role": "assistant", "content": text})

        components: dict[str, float] = {}
        info: dict[str, Any] = {"turn": self._turn, "task_id": self._task.task_id}
        terminated = truncated = False
        penalty = FORMAT_PENALTY if self.reward_mode == "dense" else 0.0

        first_new = len(self._messages)  # what this step adds to the chat starts here
        if note is not None and not text:
            reply, components["format"] = f"[error] {note}.", -penalty
        elif len(text) > self.max_action_chars:
            reply = (
                f"[error] Your message is {len(text):,} characters long; the limit is "
                f"{self.max_action_chars:,}. It was not processed. Send a shorter message."
            )
            components["format"] = -penalty
        elif not text.strip():
            reply = "[error] Your message was empty. Call a tool or give your final answer."
            components["format"] = -penalty
        else:
            parsed = parse_tool_calls(text)
            if parsed.is_final:
                reply, terminated, truncated = self._submit(text, components, info)
            else:
                try:
                    reply, malformed = self._run_tools(parsed.calls, [e.message for e in parsed.errors], info)
                except InfraError as exc:
                    reply, truncated = f"[infrastructure error] {exc}", True
                    info["infra_error"] = str(exc)
                    malformed = False
                if malformed:
                    components["format"] = -penalty
        if "format" in components and len(self._messages) == first_new:
            # The env's answer to an unprocessed message is part of the chat, so chat templates (and the
            # token-level wrapper) show the policy exactly what the observation says.
            self._messages.append({"role": "user", "content": reply})
        if note is not None and text:
            reply = f"[note] {note}.\n{reply}"
            if len(self._messages) > first_new:
                added = self._messages[first_new]
                added["content"] = f"[note] {note}.\n{added['content']}"

        if not (terminated or truncated) and self._turn >= self.max_turns:
            truncated = True
            reply = f"{reply}\n\n[turn limit of {self.max_turns} reached; the episode ends unverified]"

        lo, hi = self.reward_range
        reward = float(min(max(sum(components.values()), lo), hi))
        self._return += reward
        self._done = terminated or truncated
        info.update(
            reward_components=components,
            episode_return=self._return,
            messages=self.messages,
        )
        if self._done:
            info["task_row"] = dict(self._task.row)
            info["versions"] = self.versions()
        self._render_if_human()
        return self._cap(reply), reward, terminated, truncated, info

    def render(self) -> str | None:
        text = "\n\n".join(f"<{m['role']}>\n{m['content']}" for m in self._messages)
        if self.render_mode == "ansi":
            return text
        if self.render_mode == "human":
            print(text)
        return None

    # ------------------------------------------------------------------ internals
    def _select_task(self, options: Mapping[str, Any]) -> Task:
        if "task" in options:
            row = options["task"]
            if not isinstance(row, Mapping):
                raise TypeError('options["task"] must be a task row (dict)')
            return self.row_to_task(row, -1)
        if "task_id" in options:
            return self.tasks.by_id(str(options["task_id"]))
        if "task_index" in options:
            index = int(options["task_index"])
            if not 0 <= index < len(self.tasks):
                raise IndexError(f"task_index {index} out of range for {len(self.tasks)} tasks")
            return self.tasks[index]
        return self.tasks[int(self.np_random.integers(len(self.tasks)))]

    def _submit(self, answer: str, components: dict[str, float], info: dict[str, Any]) -> tuple[str, bool, bool]:
        assert self._task is not None
        try:
            verdict = self.verify(self._task, answer)
        except InfraError as exc:
            verdict = Verdict.infra_failure(str(exc))
        info["verdict"] = {**verdict.to_dict(), "verifier": f"{self.verifier_name}@{self.verifier_version}"}
        if verdict.infra_error is not None:
            info["infra_error"] = verdict.infra_error
            return f"[infrastructure error] the answer could not be verified: {verdict.infra_error}", False, True
        self._attempts += 1
        components["verifier"] = float(verdict.reward)
        attempts_left = self.max_attempts - self._attempts
        if verdict.passed or attempts_left <= 0:
            return f"[verdict] {verdict.reason or ('correct' if verdict.passed else 'incorrect')}", True, False
        self._messages.append({"role": "user", "content": self.feedback(verdict, attempts_left)})
        return self._messages[-1]["content"], False, False

    def _run_tools(self, calls: Sequence[ToolCall], parse_errors: list[str], info: dict[str, Any]) -> tuple[str, bool]:
        """Run the calls in order; return the observation and whether any call was malformed.

        The n-th call parsed from the assistant message of turn t has the id ``call_{t}_{n}``: its tool
        message (result or error) carries it as ``tool_call_id`` and ``info["tool_calls"]`` lists it, so
        results pair with calls without relying on order. Errors of text that did not parse as a call have
        no call to point to, and no ``tool_call_id``.
        """
        results: list[str] = []
        ids = [f"call_{self._turn}_{n}" for n in range(len(calls))]
        info["tool_calls"] = [
            {"id": call_id, "name": c.name, "arguments": c.arguments} for call_id, c in zip(ids, calls, strict=True)
        ]
        errors: list[tuple[str, str | None]] = [(message, None) for message in parse_errors]
        for call_id, call in zip(ids, calls, strict=True):
            tool = self._tools.get(call.name)
            if tool is None:
                known = ", ".join(self._tools) or "none"
                errors.append((f"unknown tool {call.name!r} (available: {known})", call_id))
                continue
            try:
                output = tool(call.arguments)
            except ToolArgumentError as exc:
                errors.append((str(exc), call_id))
                continue
            except InfraError:
                raise
            except Exception as exc:  # a bug in a tool is our failure, not the policy's
                raise InfraError(f"tool {call.name!r} failed: {type(exc).__name__}: {exc}") from exc
            results.append(output)
            self._messages.append({"role": "tool", "tool_call_id": call_id, "name": call.name, "content": output})
        for message, call_id in errors:
            results.append(f"[error] {message}")
            error = {"role": "tool", "name": "error", "content": f"[error] {message}"}
            self._messages.append(error if call_id is None else {**error, "tool_call_id": call_id})
        return "\n\n".join(results), bool(errors)

    def _cap(self, text: str) -> str:
        if len(text) <= self.max_observation_chars:
            return text
        cut = len(text) - self.max_observation_chars
        return f"{text[: self.max_observation_chars]}\n[... {cut:,} more characters cut]"

    def _render_if_human(self) -> None:
        if self.render_mode == "human":
            self.render()
