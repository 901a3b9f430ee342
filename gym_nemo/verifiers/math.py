"""Math answer equivalence with math-verify, NeMo Gym ``math_with_judge`` semantics, bounded in time.

``verify_math(expected_answer, response)`` scores a whole response the way NeMo Gym's math_with_judge
server does with its judge off:

1. The expected answer loses outer ``\\(...\\)`` / ``$...$`` delimiters and is wrapped in ``\\boxed{}``;
   math-verify compares it (LaTeX extraction) with the whole response (expression or LaTeX extraction: a
   ``\\boxed{}`` answer has priority, and without one math-verify reads the last answer it can find in the
   text, as NeMo Gym does). Reward 1.0 iff equivalent. An empty response scores 0 without a check.
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


#: Bumped when our use of math-verify changes; the math-verify release is part of the version. 2: a response
#: without ``\\boxed{}`` is checked too (math-verify reads its last answer), as NeMo Gym does.
VERIFIER_VERSION = f"2+math-verify-{_math_verify_version()}"
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
    details["boxed_answer"] = boxed
    if not response.strip():
        details["library_reward"] = 0.0
        reason = "empty response; put the final answer in \\boxed{...}"
        return Verdict(reward=0.0, passed=False, reason=reason, details=details)
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
            judged = boxed if boxed is not None else details["extracted_answer"] or response
            equal, evaluations = judge.equivalent(question or "", expected_answer, judged)
        except InfraError as exc:
            return Verdict.infra_failure(f"LLM judge: {exc}")
        details["judge_evaluations"] = evaluations
        if equal:
            reason = "correct (the LLM judge found it equivalent)"
            return Verdict(reward=1.0, passed=True, reason=reason, details=details)
    shown = f"\\boxed{{{_short(boxed)}}}" if boxed is not None else "the response (it has no \\boxed{...})"
    if result.get("timed_out"):
        reason = f"checking {shown} took longer than {timeout_s:g} s; it counts as incorrect"
    elif boxed is None or not boxed.strip():
        what = "an empty \\boxed{}" if boxed is not None else "no complete \\boxed{...}"
        reason = f"no correct answer found in the response (it has {what}); put the final answer in \\boxed{{...}}"
    else:
        reason = f"the final answer {shown} is not correct"
    return Verdict(reward=0.0, passed=False, reason=reason, details=details)


def _normalise_result(answer: str) -> str:
    answer = strip_math_delimiters(answer)
    if answer.startswith("\\text{") and answer.endswith("}"):
        answer = answer[len("\\text{") : -1].strip()
    return " ".join(answer.split())


def verify_boxed_result(expected_result: str, response: str) -> Verdict:
    """NeMo Gym ``math_with_code``'s rule: the last complete ``\\boxed{}`` of ``response``, delimiters, one
    ``\\text{}`` wrapper and extra whitespace removed, equals ``expected_result`` (likewise normalised) as text,
    or both read as floats within a relative 1e-6. No math-verify: ``\\frac{1}{2}`` is not ``0.5`` here.

    >>> verify_boxed_result("42", "so \\boxed{42.0}").reward
    1.0
    """
    boxed = last_boxed(response)
    boxed = boxed.strip() if boxed is not None and boxed.strip() else None
    details: dict[str, Any] = {"expected_answer": expected_result, "extracted_answer": boxed}
    if boxed is None:
        return Verdict(0.0, False, reason="no final answer found; put it in \\boxed{...}", details=details)
    got, want = _normalise_result(boxed), _normalise_result(expected_result)
    equal = got == want
    if not equal:
        try:
            equal = abs(float(got) - float(want)) < 1e-6 * max(1.0, abs(float(want)))
        except (ValueError, OverflowError):
            equal = False
    if equal:
        return Verdict(1.0, True, reason="correct", details=details)
    return Verdict(0.0, False, reason=f"the final answer \\boxed{{{_short(boxed)}}} is not correct", details=details)


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}..."
