"""``nemo/CompCoding-v0``: competitive programming (stdin/stdout) with hidden tests and a Python tool.

Tasks: NeMo Gym code_gen rows, which load as they are: ``responses_create_params.input`` holds the prompt and
``verifier_metadata.unit_tests`` the hidden tests (``{"inputs": [...], "outputs": [...]}``, LiveCodeBench's
format, plain or NeMo Gym's ``packed`` form). No package on PyPI ships a stdin/stdout problem set with tests
that can be read offline (nvidia-livecodebench has the harness, not the problems), so the bundled set is NeMo
Gym's own code_gen example data: 5 Codeforces problems from TACO with 1-100 tests each (Apache-2.0, verbatim
in ``data/code_gen_example.jsonl``). Pass ``data=`` for a real training set in the same format.

Tool: ``execute_python(code, stdin="")`` runs code in a fresh sandbox process (no hidden tests in reach).

Final answer: a message with no tool call. Its last fenced python block is the program; each hidden test
runs it once in the sandbox with the test's input on stdin (see ``gym_nemo.verifiers.stdio_tests`` for the
comparison rules and result codes), up to ``parallel_tests`` tests at once on the local sandbox's pool (the
per-test result list is the same as a sequential run's). Reward 1.0 iff all tests pass.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from gym_nemo.core.errors import InfraError
from gym_nemo.core.task import Task, input_messages, read_jsonl
from gym_nemo.core.tool_calls import last_code_block
from gym_nemo.core.tools import Tool
from gym_nemo.core.verdict import Verdict
from gym_nemo.envs.datafiles import bundled_file
from gym_nemo.envs.python_tool import SandboxEnv, format_exec_result
from gym_nemo.sandbox import LocalSandbox, Sandbox
from gym_nemo.verifiers.stdio_tests import VERIFIER_VERSION, parse_unit_tests, verify_stdio_tests

SYSTEM_PROMPT = (
    "You are an expert competitive programmer. You can run Python code (with optional stdin) through the "
    "execute_python tool before you answer. When you are done, reply without a tool call and put your complete "
    "program in a ```python code block: it is run on hidden tests, reading stdin and writing stdout."
)


@functools.cache
def bundled_problems() -> tuple[dict[str, Any], ...]:
    """NeMo Gym's code_gen example rows, as shipped in the package."""
    return tuple(read_jsonl(str(bundled_file("code_gen_example.jsonl"))))


@functools.cache
def reference_solutions() -> dict[str, str]:
    """Our own solutions to the bundled problems, keyed by ``hash_id`` (each passes all its tests). One problem
    has none: its tests expect one particular answer among many valid ones."""
    return json.loads(bundled_file("code_gen_references.json").read_text(encoding="utf-8"))


class CompCodingEnv(SandboxEnv):
    """Stdin/stdout programming problems with hidden tests; see the module docstring.

    Args (beyond :class:`SandboxEnv`'s: sandbox, sandbox_require, timeout_s: of each tool run and of each hidden
    test, as NeMo Gym's code_gen, memory_mb, tool_output_chars; and :class:`TextEnv`'s):
        total_timeout_s: limit on one whole verification; tests not reached get ``-1``.
        float_tolerance: absolute/relative tolerance for float tokens in outputs; ``None`` for exact decimals.
        parallel_tests: how many of one answer's hidden tests run at once (each on its own connection to the
            local sandbox daemon; other backends run them one at a time); 1 = one after another.
    """

    verifier_name = "stdio_tests"
    verifier_version = VERIFIER_VERSION
    default_max_turns = 8
    default_system_prompt = SYSTEM_PROMPT

    def __init__(
        self,
        *,
        total_timeout_s: float = 60.0,
        float_tolerance: float | None = 1e-6,
        parallel_tests: int = 4,
        **kwargs: Any,
    ) -> None:
        if parallel_tests < 1:
            raise ValueError(f"parallel_tests must be >= 1, got {parallel_tests}")
        self.parallel_tests = parallel_tests
        self.total_timeout_s = total_timeout_s
        self.float_tolerance = float_tolerance
        self._test_sandboxes: list[Sandbox] = []
        super().__init__(**kwargs)

    @classmethod
    def bundled_rows(cls) -> Sequence[Mapping[str, Any]]:
        return bundled_problems()

    @classmethod
    def row_to_task(cls, row: Mapping[str, Any], index: int) -> Task:
        meta = row.get("verifier_metadata")
        if not isinstance(meta, Mapping) or "unit_tests" not in meta:
            raise ValueError(f"task row {index}: needs verifier_metadata.unit_tests ({{'inputs', 'outputs'}})")
        try:
            tests = parse_unit_tests(meta["unit_tests"])
        except ValueError as exc:
            raise ValueError(f"task row {index}: {exc}") from exc
        task_id = str(meta.get("task_id") or row.get("hash_id") or row.get("id") or f"row-{index}")
        reference = meta.get("reference_solution") or reference_solutions().get(str(row.get("hash_id")))
        return Task(
            task_id=task_id,
            messages=tuple(input_messages(row)),
            hidden={"tests": tests},
            row=row,
            reference=f"```python\n{reference}\n```" if reference else None,
        )

    def make_tools(self) -> Sequence[Tool]:
        return [
            Tool(
                name="execute_python",
                description=(
                    "Run a Python 3 program in a fresh sandboxed process, with `stdin` as its standard input, and "
                    f"return its exit status, stdout and stderr (each cut to {self.tool_output_chars} characters). "
                    f"No network; {self.timeout_s:g} s time limit."
                ),
                parameters={
                    "type": "object",
                    "properties": {
                        "code": {"type": "string", "description": "The Python source to run."},
                        "stdin": {"type": "string", "description": "Text fed to the program's standard input."},
                    },
                    "required": ["code"],
                    "additionalProperties": False,
                },
                fn=self._execute_python,
            )
        ]

    def _execute_python(self, code: str, stdin: str = "") -> str:
        result = self.sandbox.run(code, stdin=stdin, timeout=self.timeout_s, memory_mb=self.memory_mb)
        if result.infra_error is not None:
            raise InfraError(f"sandbox: {result.infra_error}")
        return format_exec_result(result, self.tool_output_chars)

    def verify(self, task: Task, answer: str) -> Verdict:
        return verify_stdio_tests(
            self.sandbox,
            solution=last_code_block(answer),
            tests=task.hidden["tests"],
            timeout_s=self.timeout_s,
            total_timeout_s=self.total_timeout_s,
            memory_mb=self.memory_mb,
            float_tolerance=self.float_tolerance,
            extra_sandboxes=self._extra_sandboxes(),
        )

    def _extra_sandboxes(self) -> list[Sandbox]:
        """More connections to the local daemon, made on first use, for ``parallel_tests`` tests at once."""
        if not self._test_sandboxes and self.parallel_tests > 1 and isinstance(self.sandbox, LocalSandbox):
            self._test_sandboxes = [self.sandbox.another_connection() for _ in range(self.parallel_tests - 1)]
        return self._test_sandboxes

    def close(self) -> None:
        for extra in self._test_sandboxes:
            extra.close()
        self._test_sandboxes = []
        super().close()
