"""Math answer equivalence with math-verify, NeMo Gym ``math_with_judge`` semantics, bounded in time.

``verify_math(expected_answer, response)`` scores a whole response the way NeMo Gym's math_with_judge
server does with its judge off:

1. The response must contain a complete, non-empty last ``\\boxed{...}``; otherwise reward 0 (no check runs).
2. The expected answer loses outer ``\\(...\\)`` / ``$...$`` delimiters and is wrapped in ``\\boxed{}``;
   math-verify compares it (LaTeX extraction) with the response (expression or LaTeX extraction, so the
   boxed answer has priority). Reward 1.0 iff equivalent.
3. Optionally (``judge=``), when math-verify says "not equal", an LLM judge decides, asked in both answer
   orders (:mod:`gym_nemo.verifiers.llm_judge`); a judge that fails is an infrastructure error, never a 0.

Bounded in time: math-verify guards itself with ``signal.alarm``, which raises outside a main thread and
cannot stop a wedged C call. Its timeouts are disabled instead; every check runs in the verifier worker
process (:mod:`gym_nemo.verifiers.worker`) and each whole request has a time bound (``timeout_s``, NeMo
Gym's 10 s by default) on the worker's CPU time, not wall time as in NeMo Gym, so that the reward does not
depend on the machine's load (wall time is capped at 3x); a check that overruns is killed and the answer
scores 0, as in NeMo Gym, and so does one that crashes the worker twice. Only a worker that cannot start
is an infrastructure error. Pure and deterministic in (expected answer, response), up to the time bound.
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any

from gym_nemo.core.errors import InfraError
from gym_nemo.core.verdict import Verdict
from gym_nemo.verifiers.worker import VerifierWorker, default_worker

if TYPE_CHECKING:
    from gym_nemo.verifiers.llm_judge import LLMJudge


def _math_verify_version() -> str:
    try:
        return metadata.version("math-verify")
    except metadata.PackageNotFoundError:
        return "missing"


#: Bumped when our use of math-verify changes; the math-verify release is part of the version.
VERIFIER_VERSION = f"1+math-verify-{_math_verify_version()}"
DEFAULT_TIMEOUT_S = 10.0  # NeMo Gym's library_verifier_timeout_seconds


def last_boxed(text: str) -> str | None:
    """The contents of the last complete ``\\boxed{...}`` (balanced braces), or ``None``."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth = 0
    for i in range(start + len("\\boxed{") - 1, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + len("\\boxed{") : i]
    return None


def strip_math_delimiters(answer: str) -> str:
    """``\\(x\\)`` and ``$x$`` -> ``x``: expected answers often carry inline-math delimiters."""
    answer = answer.strip()
    if answer.startswith("\\(") and answer.endswith("\\)"):
        answer = answer[2:-2].strip()
    if len(answer) > 1 and answer.startswith("$") and answer.endswith("$"):
        answer = answer[1:-1].strip()
    return answer


def verify_math(
    expected_answer: str,
    response: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    judge: LLMJudge | None = None,
    question: str | None = None,
    worker: VerifierWorker | None = None,
) -> Verdict:
    """Score ``response`` against ``expected_answer`` (see the module docstring for the rules).

    ``details``: ``expected_answer``, ``boxed_answer`` (the last ``\\boxed{}`` as written),
    ``extracted_answer`` (math-verify's reading of it), ``library_reward``, and ``judge_evaluations`` when the
    judge ran. The judge needs ``question`` (the problem text).
    """
    details: dict[str, Any] = {"expected_answer": expected_answer, "boxed_answer": None, "extracted_answer": None}
    boxed = last_boxed(response)
    if boxed is None or not boxed.strip():
        details["library_reward"] = 0.0
        what = "an empty \\boxed{}" if boxed is not None else "no complete \\boxed{...}"
        return Verdict(
            reward=0.0,
            passed=False,
            reason=f"no final answer found (the response has {what}); put the final answer in \\boxed{{...}}",
            details=details,
        )
    details["boxed_answer"] = boxed
    gold = "\\boxed{" + strip_math_delimiters(expected_answer) + "}"
    result = (worker or default_worker()).call("math", timeout_s, gold=gold, pred=response)
    details.update(extracted_answer=result.get("extracted"), library_reward=float(result.get("reward", 0.0)))
    for flag in ("timed_out", "died", "error"):
        if result.get(flag):
            details[flag] = result[flag]
    if details["library_reward"] > 0.5:
        return Verdict(reward=1.0, passed=True, reason="correct", details=details)
    if judge is not None:
        try:
            equal, evaluations = judge.equivalent(question or "", expected_answer, boxed)
        except InfraError as exc:
            return Verdict.infra_failure(f"LLM judge: {exc}")
        details["judge_evaluations"] = evaluations
        if equal:
            reason = "correct (the LLM judge found it equivalent)"
            return Verdict(reward=1.0, passed=True, reason=reason, details=details)
    if result.get("timed_out"):
        reason = f"checking \\boxed{{{_short(boxed)}}} took longer than {timeout_s:g} s; it counts as incorrect"
    else:
        reason = f"the final answer \\boxed{{{_short(boxed)}}} is not correct"
    return Verdict(reward=0.0, passed=False, reason=reason, details=details)


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}..."
