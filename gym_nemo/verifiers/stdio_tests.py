"""Judge a stdin/stdout program against hidden tests, the way LiveCodeBench (and NeMo Gym's code_gen) does.

``verify_stdio_tests(sandbox, solution=..., tests=...) -> Verdict`` is a pure function of its inputs. Each
test is one fresh sandbox run of the program with that test's input on stdin; the expected output never
enters the sandbox, and no run sees another test's data. Tests run in order and stop at the first failure,
so ``details["result"]`` is exactly the list NeMo Gym's code_gen rollouts store in ``result``:
``True`` per passed test, then one LiveCodeBench code for the failing one: ``-2`` wrong answer, ``-3`` time
limit, ``-4`` runtime error (non-zero exit, killed, memory or output limit), ``-1`` global timeout.

Output comparison (LiveCodeBench ``grade_stdio``): both outputs are stripped and split into lines, each line
stripped; the line counts must agree; a line passes if it is equal, or if its whitespace-separated tokens all
parse as decimals and match pairwise. Decimal tokens match when equal (so ``1.50`` == ``1.5``), or, when
either token is written as a float (has ``.`` or an exponent), when the absolute or relative error is at
most ``float_tolerance`` (default 1e-6, as NeMo Gym's current code_gen server; ``None`` = exact decimals,
LiveCodeBench's original rule). Integers never get a tolerance.

With ``extra_sandboxes`` (more connections to the same sandbox pool), the tests of one verification run
concurrently, each started with what is left of ``total_timeout_s`` when it starts; the results are read in
test order and stop at the first failure, so ``result`` is the same list as a sequential run's (tests after a
failure may have run, and are ignored).

Differences from LiveCodeBench's in-process harness, on purpose: the program runs as a real process (real
stdin, ``__name__ == "__main__"``), so ``sys.exit(1)`` or an uncaught exception is a runtime error rather than
being swallowed.
"""

from __future__ import annotations

import base64
import json
import queue
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from gym_nemo.core.verdict import Verdict
from gym_nemo.sandbox.base import ExecResult, Sandbox

VERIFIER_VERSION = "1"

PASSED = True
GLOBAL_TIMEOUT = -1
WRONG_ANSWER = -2
TIME_LIMIT = -3
RUNTIME_ERROR = -4


@dataclass(frozen=True)
class UnitTests:
    """Hidden tests in LiveCodeBench's format: parallel lists of stdin texts and expected stdout texts."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.inputs)


def parse_unit_tests(raw: Any) -> UnitTests:
    """Read ``verifier_metadata.unit_tests``: a dict (plain, or NeMo Gym's zlib+base64 ``packed`` form) or its
    JSON string. Raises ``ValueError`` for anything else, and for call-based tests (``fn_name``), which this
    stdin/stdout judge does not run."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"unit_tests is not valid JSON: {exc.msg}") from exc
    if not isinstance(raw, Mapping):
        raise ValueError("unit_tests must be an object with 'inputs' and 'outputs'")
    if "packed" in raw:
        try:
            raw = {**json.loads(zlib.decompress(base64.b64decode(raw["packed"]))), "fn_name": raw.get("fn_name")}
        except (ValueError, zlib.error, TypeError) as exc:
            raise ValueError(f"unit_tests.packed does not decode: {exc}") from exc
    if raw.get("fn_name"):
        raise ValueError("call-based unit tests (fn_name) are not supported; only stdin/stdout tests")
    inputs, outputs = raw.get("inputs"), raw.get("outputs")
    if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs) or not inputs:
        raise ValueError("unit_tests needs non-empty 'inputs' and 'outputs' lists of the same length")
    if not all(isinstance(x, str) for x in [*inputs, *outputs]):
        raise ValueError("unit_tests inputs and outputs must be strings")
    return UnitTests(tuple(inputs), tuple(outputs))


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().split("\n")]


def _is_float_token(token: str) -> bool:
    return "." in token or "e" in token.lower()


def _tokens_match(expected: str, actual: str, tolerance: float | None) -> bool:
    try:
        e, a = Decimal(expected), Decimal(actual)
        if e == a:
            return True
        if tolerance is None or not (_is_float_token(expected) or _is_float_token(actual)):
            return False
        if not (e.is_finite() and a.is_finite()):
            return False
        error, tol = abs(e - a), Decimal(repr(tolerance))
        return error <= tol or error / max(abs(e), Decimal(1)) <= tol
    except (InvalidOperation, ArithmeticError, ValueError):
        return False


def outputs_match(actual: str, expected: str, float_tolerance: float | None = 1e-6) -> tuple[bool, str]:
    """Compare program output with the expected output (rules in the module docstring); say why not."""
    got, want = _lines(actual), _lines(expected)
    if len(got) != len(want):
        return False, f"wrong answer: {len(got)} output line(s), expected {len(want)}"
    for index, (g, w) in enumerate(zip(got, want, strict=True)):
        if g == w:
            continue
        g_tokens, w_tokens = g.split(), w.split()
        if len(g_tokens) == len(w_tokens) and all(
            _tokens_match(wt, gt, float_tolerance) for gt, wt in zip(g_tokens, w_tokens, strict=True)
        ):
            continue
        return False, f"wrong answer at line {index + 1}: got {_cut(g)!r}, expected {_cut(w)!r}"
    return True, ""


def _cut(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else f"{text[: limit // 2]}...{text[-limit // 2 :]}"


def _classify(run: ExecResult, expected: str, tolerance: float | None) -> tuple[bool | int, str]:
    if run.timed_out:
        return TIME_LIMIT, "time limit exceeded"
    if run.output_truncated:
        return RUNTIME_ERROR, "output limit exceeded"
    if run.memory_exceeded:
        return RUNTIME_ERROR, "memory limit exceeded"
    if run.exit_code != 0:
        tail = run.stderr.strip().splitlines()[-1:] or [f"exit code {run.exit_code}"]
        return RUNTIME_ERROR, f"runtime error: {_cut(tail[0], 300)}"
    ok, why = outputs_match(run.stdout, expected, tolerance)
    return (PASSED, "") if ok else (WRONG_ANSWER, why)


def _run_tests(
    sandboxes: Sequence[Sandbox],
    solution: str,
    inputs: Sequence[str],
    timeout_s: float,
    total_timeout_s: float,
    memory_mb: int | None,
    started: float,
) -> Iterator[tuple[ExecResult | None, float]]:
    """``(run, seconds that were left when it started)`` per test, in order; ``None`` where no time was left.
    One sandbox: one test at a time, started only when asked for. More: up to one test per sandbox at once."""

    def run_one(stdin: str, box: Sandbox) -> tuple[ExecResult | None, float]:
        left = total_timeout_s - (time.monotonic() - started)
        if left <= 0.05:
            return None, left
        return box.run(solution, stdin=stdin, timeout=min(timeout_s, left), memory_mb=memory_mb), left

    if len(sandboxes) == 1:
        for stdin in inputs:
            yield run_one(stdin, sandboxes[0])
        return
    free: queue.SimpleQueue[Sandbox] = queue.SimpleQueue()
    for box in sandboxes:
        free.put(box)

    def on_a_free_sandbox(stdin: str) -> tuple[ExecResult | None, float]:
        box = free.get()
        try:
            return run_one(stdin, box)
        finally:
            free.put(box)

    pool = ThreadPoolExecutor(max_workers=len(sandboxes), thread_name_prefix="stdio-tests")
    try:
        futures = [pool.submit(on_a_free_sandbox, stdin) for stdin in inputs]
        for future in futures:
            yield future.result()
    finally:  # stop at the first failure: tests not started yet never start
        pool.shutdown(wait=True, cancel_futures=True)


def verify_stdio_tests(
    sandbox: Sandbox,
    *,
    solution: str | None,
    tests: UnitTests,
    timeout_s: float = 10.0,
    total_timeout_s: float = 60.0,
    memory_mb: int | None = None,
    float_tolerance: float | None = 1e-6,
    extra_sandboxes: Sequence[Sandbox] = (),
) -> Verdict:
    """Run ``solution`` (a Python program reading stdin) on each hidden test; reward 1.0 iff all pass.

    ``timeout_s`` bounds each test; ``total_timeout_s`` bounds the whole verification (tests left when it
    runs out get ``-1``, as LiveCodeBench's global timeout). ``details``: ``result`` (the per-test list, see
    the module docstring), ``num_tests``, ``passed``, and ``metadata`` about the first failure.
    ``extra_sandboxes``: run up to ``1 + len(extra_sandboxes)`` tests at once (same results, in less time).
    """
    total = len(tests)
    if solution is None or not solution.strip():
        return Verdict(
            0.0, False, 0.0, "no ```python code block found in the final answer", {"result": [], "num_tests": total}
        )
    started = time.monotonic()
    result: list[bool | int] = []
    metadata: dict[str, Any] = {}
    runs = _run_tests(
        [sandbox, *extra_sandboxes], solution, tests.inputs, timeout_s, total_timeout_s, memory_mb, started
    )
    try:
        for index, (stdin, expected) in enumerate(zip(tests.inputs, tests.outputs, strict=True)):
            run, left = next(runs)
            if run is None:
                result.append(GLOBAL_TIMEOUT)
                metadata = {"test": index, "error_code": GLOBAL_TIMEOUT, "error_message": "global timeout"}
                break
            if run.infra_error is not None:
                return Verdict.infra_failure(run.infra_error)
            code, why = _classify(run, expected, float_tolerance)
            if code is TIME_LIMIT and timeout_s > left:  # cut short by the global budget, not the per-test limit
                code, why = GLOBAL_TIMEOUT, "global timeout"
            result.append(code)
            if code is not PASSED:
                metadata = {
                    "test": index,
                    "error_code": code,
                    "error_message": why,
                    "inputs": _cut(stdin, 300),
                    "expected": _cut(expected, 300),
                    "output": _cut(run.stdout, 300),
                }
                break
    finally:
        runs.close()
    passed = sum(r is True for r in result)
    ok = passed == total
    reason = f"{passed}/{total} tests passed" + ("" if ok else f"; test {len(result)}: {metadata['error_message']}")
    details = {"result": result, "num_tests": total, "passed": passed, "metadata": metadata}
    return Verdict(1.0 if ok else 0.0, ok, passed / total, reason, details)
