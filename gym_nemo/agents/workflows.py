"""Agent workflows: what ``AgentWorkflowEnv`` and the rollout source run, in the three forms they take.

A workflow is called as ``workflow(row, base_url) -> score``: ``row`` is the task row, ``base_url`` the
OpenAI base URL (a gateway run's) every LLM call of the run must use. It may be

* a Python callable (sync or ``async``);
* an import path ``"pkg.mod:func"`` naming one;
* an HTTP endpoint ``"http://host:port"`` in NeMo Gym's agent ``/run`` shape: ``POST {url}/run`` with the
  task row plus ``"base_url"``; the reply is the row with ``"reward"`` (and ``"response"``).

The score may be a number or a mapping with ``"reward"``. :func:`calculator_workflow` is the default
workflow of ``nemo/AgentWorkflow-v0``: a small tool-calling agent written against the plain HTTP API.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import json
import math
import operator
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

Workflow = Callable[[Mapping[str, Any], str], Any]


class WorkflowError(RuntimeError):
    """The workflow could not produce a score (it raised, failed over HTTP, or returned no number)."""


def resolve_workflow(workflow: Workflow | str, *, timeout_s: float = 600.0) -> Workflow:
    """A callable for any of the three forms (see the module docstring)."""
    if callable(workflow):
        return workflow
    if not isinstance(workflow, str) or not workflow:
        raise TypeError(f"a workflow is a callable, 'pkg.mod:func' or an http(s) URL, got {workflow!r}")
    if workflow.startswith(("http://", "https://")):
        return _endpoint_workflow(workflow.rstrip("/"), timeout_s)
    module, sep, name = workflow.partition(":")
    if not sep or not name:
        raise ValueError(f"an import path looks like 'pkg.mod:func', got {workflow!r}")
    func = getattr(importlib.import_module(module), name, None)
    if not callable(func):
        raise ValueError(f"{workflow!r} does not name a callable")
    return func


def run_workflow(workflow: Workflow, row: Mapping[str, Any], base_url: str) -> float:
    """Call the workflow and return its score as a finite float; raise :class:`WorkflowError` if it has none."""
    result = workflow(row, base_url)
    if inspect.isawaitable(result):
        result = asyncio.run(_awaited(result))
    if isinstance(result, Mapping):
        result = result.get("reward")
    if isinstance(result, bool) or not isinstance(result, (int, float)) or not math.isfinite(result):
        raise WorkflowError(f"the workflow returned {result!r:.200}, not a finite score")
    return float(result)


async def _awaited(result: Any) -> Any:
    return await result


def _endpoint_workflow(url: str, timeout_s: float) -> Workflow:
    def call(row: Mapping[str, Any], base_url: str) -> Any:
        body = json.dumps({**row, "base_url": base_url}).encode()
        request = urllib.request.Request(f"{url}/run", body, {"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as reply:
                answer = json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            raise WorkflowError(f"POST {url}/run answered {exc.code}: {detail}") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise WorkflowError(f"POST {url}/run failed: {type(exc).__name__}: {exc}") from None
        if not isinstance(answer, Mapping) or "reward" not in answer:
            raise WorkflowError(f"POST {url}/run returned no 'reward': {str(answer)[:200]}")
        return answer

    call.__name__ = f"endpoint:{url}"
    return call


# ---------------------------------------------------------------------- the default workflow
CALCULATOR_TOOL = {
    "type": "function",
    "function": {
        "name": "calculate",
        "description": "Evaluate an arithmetic expression (+, -, *, /, **, parentheses) and return the result.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string", "description": "e.g. '(3 + 4) * 5'"}},
            "required": ["expression"],
        },
    },
}

#: The default task rows of ``nemo/AgentWorkflow-v0``: arithmetic questions with their answers.
CALCULATOR_ROWS = [
    {"task_id": f"calc-{i}", "question": q, "answer": a}
    for i, (q, a) in enumerate(
        [("What is 17 * 23?", "391"), ("What is (144 / 12) + 7?", "19"), ("What is 2 ** 10 - 24?", "1000"),
         ("What is 999 + 1001?", "2000"), ("What is 81 / 9 * 4?", "36"), ("What is 13 * 13 - 69?", "100")]
    )
]  # fmt: skip

_OPS: dict[type, Callable[..., Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.Pow: operator.pow, ast.USub: operator.neg, ast.UAdd: operator.pos,
}  # fmt: skip


def calculate(expression: str) -> str:
    """A safe arithmetic evaluator (numbers and + - * / ** only); errors come back as text."""

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 64:
                raise ValueError("exponent too large")
            result = _OPS[type(node.op)](left, right)
            if abs(result) > 1e100:
                raise ValueError("result too large")
            return result
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.operand))
        raise ValueError(f"unsupported expression element {type(node).__name__}")

    try:
        result = value(ast.parse(str(expression), mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, TypeError, RecursionError, OverflowError) as exc:
        return f"error: {exc}"
    return str(int(result)) if isinstance(result, float) and result.is_integer() else str(result)


def _chat(base_url: str, body: dict[str, Any], timeout_s: float = 600.0) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{base_url}/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as reply:
        return json.loads(reply.read())["choices"][0]["message"]


def calculator_workflow(row: Mapping[str, Any], base_url: str, *, max_turns: int = 4) -> float:
    """Ask ``row["question"]`` with a ``calculate`` tool; run the tool calls the model makes; score 1.0 iff
    the final answer contains ``row["answer"]``. Written against the raw HTTP API (no framework)."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a careful assistant. Use the calculate tool for arithmetic."},
        {"role": "user", "content": str(row["question"])},
    ]
    for _ in range(max_turns):
        message = _chat(base_url, {"model": "policy", "messages": messages, "tools": [CALCULATOR_TOOL]})
        messages.append({k: v for k, v in message.items() if k in ("role", "content", "tool_calls")})
        if not message.get("tool_calls"):
            return float(str(row["answer"]) in (message.get("content") or ""))
        for call in message["tool_calls"]:
            try:
                expression = json.loads(call["function"]["arguments"] or "{}").get("expression", "")
            except (json.JSONDecodeError, AttributeError):
                expression = ""
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": calculate(expression)})
    return 0.0
