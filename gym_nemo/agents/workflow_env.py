"""``nemo/AgentWorkflow-v0``: any agent workflow as a ``gymnasium.Env``, by inverting control.

``reset`` starts the workflow on a task row in a background thread, with ``base_url`` pointing at this
env's own session on a capturing gateway (one gateway per process, shared by its envs). Each LLM request
the agent makes waits there; the observation is that request (its new messages as text;
``info["messages"]`` and ``info["tools"]`` as the request has them), and ``step(action)`` answers it with
the action as the assistant's message (``<tool_call>`` blocks in it reach the agent as structured OpenAI
``tool_calls``). The next observation is the agent's next request. When the workflow returns, the episode
terminates with its score as the reward.

* Concurrent requests of one run (parallel sub-agents) are served one per step, in arrival order;
  ``info["request_id"]`` names the request an observation shows, ``info["answered_request"]`` the one a
  step answered, ``info["pending_requests"]`` how many more are waiting.
* A workflow that raises, returns no finite score or runs past ``timeout_s`` ends the episode
  ``truncated`` with ``info["infra_error"]``, reward 0.0 that is not a score. If it fails before its first
  LLM call, ``reset`` returns an observation saying so with ``info["infra_error"]`` and the first step ends
  the episode truncated. A workflow that finishes without any LLM call is reported the same way, its
  score on the first step.
* An abandoned episode (a new ``reset``, ``close``) finishes its gateway run: the agent's waiting and later
  calls get OpenAI errors (``410``), so its thread ends instead of hanging.

The env lives in :mod:`gym_nemo.agents` (above policies and beside serve), not in :mod:`gym_nemo.envs`,
because it runs a server; ``gym_nemo.registry`` names it by its entry-point string only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
from gymnasium.error import ResetNeeded

from gym_nemo.agents.calls import APIError, ChatRequest, Completion
from gym_nemo.agents.gateway import Gateway, Run
from gym_nemo.agents.workflows import CALCULATOR_ROWS, Workflow, calculator_workflow, resolve_workflow, run_workflow
from gym_nemo.core.spaces import UnicodeText
from gym_nemo.core.task import Task, TaskSource, read_jsonl

_SHARED: tuple[int, Gateway] | None = None
_SHARED_LOCK = threading.Lock()


def shared_gateway() -> Gateway:
    """This process's gateway for workflow envs (started on first use; a forked worker starts its own)."""
    global _SHARED
    import os

    with _SHARED_LOCK:
        if _SHARED is None or _SHARED[0] != os.getpid():
            _SHARED = (os.getpid(), Gateway().start())
        return _SHARED[1]


@dataclass
class _Request:
    number: int
    request: ChatRequest
    answer: concurrent.futures.Future[Completion] = field(default_factory=concurrent.futures.Future)


class _Intercept:
    """The gateway backend of one episode: each request is handed to the env and answered by ``step``."""

    name = "agent-workflow-env"

    def __init__(self, events: queue.Queue[tuple[str, Any]]) -> None:
        self.events = events
        self.closed = False
        self.waiting: list[_Request] = []
        self._numbers = itertools.count()

    async def complete(self, request: ChatRequest, state: dict[str, Any]) -> Completion:
        if self.closed:
            raise APIError(410, "this episode has ended; the env takes no more requests", code="run_finished")
        pending = _Request(next(self._numbers), request)
        self.waiting.append(pending)
        self.events.put(("request", pending))
        return await asyncio.wrap_future(pending.answer)

    def close(self) -> None:
        self.closed = True
        for pending in self.waiting:
            if not pending.answer.done():
                error = APIError(410, "the episode ended before this request was answered", code="run_finished")
                pending.answer.set_exception(error)

    async def aclose(self) -> None:
        self.close()


def _row_to_task(row: Mapping[str, Any], index: int) -> Task:
    task_id = row.get("task_id", row.get("id", index))
    return Task(task_id=str(task_id), messages=(), row=dict(row))


class AgentWorkflowEnv(gym.Env[str, str]):
    """An agent workflow as an env (see the module docstring).

    Args:
        workflow: ``workflow(row, base_url) -> score``, an import path ``"pkg.mod:func"`` or a NeMo Gym-style
            ``/run`` endpoint URL; default :func:`~gym_nemo.agents.workflows.calculator_workflow`.
        data: task rows (a list, or a JSONL path); default the calculator rows.
        task_ids: restrict the pool to these task ids.
        timeout_s: the longest a run may take, from ``reset`` to its score.
        gateway: the gateway to host this env's runs; default this process's shared one.
        max_observation_chars, max_action_chars: the text spaces' bounds (longer observations are cut).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        workflow: Workflow | str | None = None,
        data: str | Path | Sequence[Mapping[str, Any]] | None = None,
        *,
        task_ids: Sequence[str] | None = None,
        timeout_s: float = 600.0,
        gateway: Gateway | None = None,
        max_observation_chars: int = 256_000,
        max_action_chars: int = 256_000,
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        self.workflow = resolve_workflow(workflow if workflow is not None else calculator_workflow, timeout_s=timeout_s)
        rows = CALCULATOR_ROWS if data is None else (read_jsonl(data) if isinstance(data, (str, Path)) else list(data))
        self.tasks = TaskSource(rows, _row_to_task, task_ids)
        self.timeout_s = timeout_s
        self._gateway = gateway
        self.max_observation_chars = max_observation_chars
        self.observation_space = UnicodeText(max_observation_chars + 4_096)
        self.action_space = UnicodeText(max_action_chars)
        self._task: Task | None = None
        self._run: Run | None = None
        self._backend: _Intercept | None = None
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._current: _Request | None = None
        self._queued: list[_Request] = []
        self._outcome: tuple[str, Any] | None = None  # ("score", x) or ("error", message) once the workflow ended
        self._deadline = 0.0
        self._done = True
        self._transcript: list[dict[str, Any]] = []
        self._last_messages: list[dict[str, Any]] = []

    @property
    def task(self) -> Task | None:
        return self._task

    @property
    def gateway(self) -> Gateway:
        if self._gateway is None:
            self._gateway = shared_gateway()
        return self._gateway

    @property
    def run(self) -> Run | None:
        """The current episode's gateway run (its captured calls)."""
        return self._run

    def versions(self) -> dict[str, str]:
        from gym_nemo import __version__

        name = getattr(self.workflow, "__qualname__", getattr(self.workflow, "__name__", type(self.workflow).__name__))
        module = getattr(self.workflow, "__module__", "") or ""
        return {
            "gym_nemo": __version__,
            "env": self.spec.id if self.spec is not None else type(self).__name__,
            "workflow": f"{module}:{name}" if module else str(name),
            "tasks": self.tasks.digest,
        }

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start a run. ``options``: ``{"task": row}``, ``{"task_id": id}`` or ``{"task_index": i}``."""
        super().reset(seed=seed)
        self._abandon()
        self._task = self._select_task(options or {})
        self._events = queue.Queue()
        self._backend = _Intercept(self._events)
        self._run = self.gateway.open_run(backend=self._backend, metadata={"task_id": self._task.task_id})
        self._current, self._queued, self._outcome = None, [], None
        self._transcript, self._last_messages = [], []
        self._done = False
        self._deadline = time.monotonic() + self.timeout_s
        row, base_url, workflow, events = dict(self._task.row), self._run.base_url, self.workflow, self._events

        def play() -> None:
            try:
                events.put(("score", run_workflow(workflow, row, base_url)))
            except BaseException as exc:  # the workflow's failure is reported, whatever it is
                events.put(("error", f"the workflow failed: {type(exc).__name__}: {exc}"))

        threading.Thread(target=play, name=f"workflow-{self._run.run_id}", daemon=True).start()
        observation, info = self._advance()
        if self._current is None:  # ended before any LLM call
            assert self._outcome is not None
            kind, value = self._outcome
            if kind == "score":
                observation = f"[the workflow finished without calling the model; its score is {value}]"
            else:
                observation = f"[infrastructure error] {value} (before its first LLM call)"
                info["infra_error"] = value
        return self._cap(observation), dict(info, task_id=self._task.task_id, turn=0)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._task is None or self._done:
            raise ResetNeeded("call reset() before step()" if self._task is None else "the episode is over; reset()")
        info: dict[str, Any] = {"task_id": self._task.task_id, "turn": len(self._transcript) + 1}
        text = action if isinstance(action, str) else ""
        # Lone surrogates cannot go over the wire as JSON text: they become U+FFFD, as TextEnv does.
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        if self._current is not None:
            answered, self._current = self._current, None
            message = {"role": "assistant", "content": text}
            self._transcript.append({"request": answered.number, **message})
            self._last_messages = [*answered.request.messages, message]
            info["answered_request"] = answered.number
            if not answered.answer.done():
                answered.answer.set_result(Completion(text=text, finish_reason="stop"))
            observation, next_info = self._advance()
            info.update(next_info)
        else:
            observation = ""
        if self._current is not None:
            return self._cap(observation), 0.0, False, False, info
        self._done = True
        assert self._outcome is not None
        kind, value = self._outcome
        info.update(messages=self._last_messages, task_row=dict(self._task.row), versions=self.versions())
        self._finish_run()
        if kind == "score":
            info["reward_components"] = {"workflow": value}
            return f"[the workflow finished; score {value}]", float(value), True, False, info
        info["infra_error"] = value
        return f"[infrastructure error] {value}", 0.0, False, True, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        return "\n\n".join(f"<{m['role']} request={m['request']}>\n{m['content']}" for m in self._transcript)

    def close(self) -> None:
        self._abandon()
        super().close()

    # ------------------------------------------------------------------ internals
    def _advance(self) -> tuple[str, dict[str, Any]]:
        """Wait for the run's next request (or its end); the observation and info that show it."""
        while not self._queued and self._outcome is None:
            remaining = self._deadline - time.monotonic()
            try:
                kind, value = self._events.get(timeout=max(remaining, 0.0)) if remaining > 0 else ("timeout", None)
            except queue.Empty:
                kind, value = "timeout", None
            if kind == "timeout":
                self._outcome = ("error", f"the workflow did not finish within timeout_s={self.timeout_s:g} s")
            elif kind == "request":
                self._queued.append(value)
            else:
                self._outcome = (kind, value)
        while True:  # requests that arrived meanwhile are served first, in order
            try:
                kind, value = self._events.get_nowait()
            except queue.Empty:
                break
            if kind == "request":
                self._queued.append(value)
            elif self._outcome is None:
                self._outcome = (kind, value)
        if not self._queued:
            return "", {}
        self._current = self._queued.pop(0)
        request = self._current.request
        info = {
            "messages": [dict(m) for m in request.messages],
            "tools": list(request.tools or []),
            "request_id": self._current.number,
            "pending_requests": len(self._queued),
            "sampling": request.sampling.to_dict(),
        }
        return self._new_text(request.messages), info

    def _new_text(self, messages: list[dict[str, Any]]) -> str:
        """The request's messages after the chat the previous observation and action made (all of them when
        the request is another conversation, e.g. a sub-agent's)."""
        seen = self._last_messages
        same = len(messages) > len(seen) > 0 and all(
            a.get("role") == b.get("role") for a, b in zip(messages, seen, strict=False)
        )
        new = messages[len(seen) :] if same else messages
        return "\n\n".join(str(m.get("content") or "") for m in new)

    def _select_task(self, options: Mapping[str, Any]) -> Task:
        if "task" in options:
            return _row_to_task(options["task"], -1)
        if "task_id" in options:
            return self.tasks.by_id(str(options["task_id"]))
        if "task_index" in options:
            return self.tasks[int(options["task_index"])]
        return self.tasks[int(self.np_random.integers(len(self.tasks)))]

    def _finish_run(self) -> None:
        if self._backend is not None:
            self._backend.close()
        if self._run is not None and self._run.run_id in self.gateway.runs:
            self.gateway.finish_run(self._run.run_id)

    def _abandon(self) -> None:
        """End the current run (if any): its waiting and later requests get 410, its thread unblocks."""
        self._finish_run()
        if self._run is not None:
            self.gateway.runs.pop(self._run.run_id, None)
        self._done = True

    def _cap(self, text: str) -> str:
        if len(text) <= self.max_observation_chars:
            return text
        cut = len(text) - self.max_observation_chars
        return f"{text[: self.max_observation_chars]}\n[... {cut:,} more characters cut]"
