"""Run a candidate Python solution against hidden assert-style tests (HumanEval's ``check(candidate)``).

``verify_function_tests(sandbox, solution=..., tests=..., entry_point=...) -> Verdict`` is a pure
function of its inputs. The tests are rewritten on the trusted side so each top-level statement that
asserts is one test with its own pass/fail, then run in one sandbox process with the solution.

Reward hacks this closes (each has a test):
* exiting early (``sys.exit(0)``, ``os._exit(0)``): a pass needs a result line tagged with a nonce the
  harness reads from stdin only after the tests ran; no line, no pass.
* "always equal" objects (a result whose ``__eq__`` returns True): every value the candidate returns
  must be built only from types implemented in C (no classes defined by the solution).
* patching builtins (``builtins.len = ...``): tests run with a snapshot of the builtins taken before the
  solution was loaded.
Code that deliberately introspects the harness's frames can still defeat in-process checks; that is the
limit of running solution and tests in one process, and why the sandbox, not the harness, is the wall.
"""

from __future__ import annotations

import ast
import json
import secrets

from gym_nemo.core.verdict import Verdict
from gym_nemo.sandbox.base import Sandbox

VERIFIER_VERSION = "1"
_RECORD = "_gym_nemo_record"

_HARNESS = r"""
import builtins as _builtins, json as _json, os as _os, sys as _sys

def _main(prelude, solution, tests, entry_point):
    test_builtins = dict(vars(_builtins))
    heap_flag = 1 << 9  # Py_TPFLAGS_HEAPTYPE: set on every class defined in Python code
    containers = (list, tuple, set, frozenset)

    def plain(value, depth=0):
        kind = type(value)
        if kind.__flags__ & heap_flag or depth > 100:
            return False
        if kind in containers:
            return all(plain(v, depth + 1) for v in value)
        if kind is dict:
            return all(plain(k, depth + 1) and plain(v, depth + 1) for k, v in value.items())
        if getattr(getattr(value, "dtype", None), "hasobject", False):
            return plain(value.tolist(), depth + 1)
        return True

    def guard(fn):
        def candidate(*args, **kwargs):
            result = fn(*args, **kwargs)
            if not plain(result):
                raise TypeError("the solution returned an object of a class it defined itself; "
                                "return plain values (int, str, list, ...)")
            return result
        return candidate

    results, errors = {}, {}
    def record(index, ok, error=None):
        results[index] = bool(ok)
        if error is not None and len(errors) < 5:
            errors[index] = (type(error).__name__ + ": " + str(error))[:300]

    load_error = None
    namespace = {"__name__": "__solution__"}
    try:
        exec(compile(prelude + solution, "<solution>", "exec"), namespace)
        fn = namespace[entry_point]
        if not callable(fn):
            raise TypeError(entry_point + " is not a function")
    except BaseException as exc:
        load_error = (type(exc).__name__ + ": " + str(exc))[:500]
    if load_error is None:
        # Tests see the solution's globals (HumanEval's tests call helpers from the prompt), but with
        # the builtins snapshot and the guarded candidate.
        test_ns = dict(namespace)
        test_ns.update({"__name__": "__tests__", "__builtins__": test_builtins, "%(record)s": record,
                        entry_point: guard(fn)})
        try:
            exec(compile(tests, "<tests>", "exec"), test_ns)
            if callable(test_ns.get("check")):
                test_ns["check"](guard(fn))
        except BaseException as exc:
            errors.setdefault(-1, (type(exc).__name__ + ": " + str(exc))[:300])
    nonce = _sys.stdin.readline().strip()
    line = _json.dumps({"results": results, "errors": errors, "load_error": load_error})
    _os.write(1, ("\n" + nonce + " " + line + "\n").encode())

_main(%(prelude)r, %(solution)r, %(tests)r, %(entry_point)r)
"""


def _asserts(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Assert) for n in ast.walk(node))


def _record_call(index: int, ok: bool, error: ast.expr | None = None) -> ast.stmt:
    args: list[ast.expr] = [ast.Constant(index), ast.Constant(ok)]
    if error is not None:
        args.append(error)
    return ast.Expr(ast.Call(func=ast.Name(_RECORD, ast.Load()), args=args, keywords=[]))


def _instrument_body(body: list[ast.stmt], start: int) -> tuple[list[ast.stmt], int]:
    """Wrap each statement that asserts in try/except that records its outcome as one test."""
    out: list[ast.stmt] = []
    index = start
    for stmt in body:
        if not _asserts(stmt):
            out.append(stmt)
            continue
        handler = ast.ExceptHandler(
            type=ast.Name("BaseException", ast.Load()),
            name="_gym_nemo_exc",
            body=[_record_call(index, False, ast.Name("_gym_nemo_exc", ast.Load()))],
        )
        out.append(ast.Try(body=[stmt, _record_call(index, True)], handlers=[handler], orelse=[], finalbody=[]))
        index += 1
    return out, index


def instrument_tests(tests: str) -> tuple[str, int]:
    """Rewrite test code so every asserting statement (in ``check`` or at top level) is scored alone.

    Returns the new source and the number of tests. Raises ``SyntaxError`` for unparsable tests.
    """
    tree = ast.parse(tests)
    count = 0
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "check":
            node.body, count = _instrument_body(node.body, count)
    tree.body, count = _instrument_body(tree.body, count)
    ast.fix_missing_locations(tree)
    return ast.unparse(tree), count


def verify_function_tests(
    sandbox: Sandbox,
    *,
    solution: str | None,
    tests: str,
    entry_point: str,
    prelude: str = "",
    timeout_s: float = 10.0,
    memory_mb: int | None = None,
) -> Verdict:
    """Score ``solution`` (Python source defining ``entry_point``) against ``tests``.

    ``prelude`` (e.g. the task's prompt with its imports and helpers) is prepended to the solution,
    so both "full function" and "completion only" answers work. Reward is 1.0 iff every test passes.
    """
    if solution is None or not solution.strip():
        return Verdict(
            0.0, False, 0.0, "no ```python code block found in the final answer", {"tests": [], "load_error": "no code"}
        )
    try:
        instrumented, total = instrument_tests(tests)
    except SyntaxError as exc:
        return Verdict.infra_failure(f"the task's hidden tests do not parse: {exc}")
    prelude = prelude if not prelude or prelude.endswith("\n") else prelude + "\n"
    program = _HARNESS % {
        "record": _RECORD,
        "prelude": prelude,
        "solution": solution,
        "tests": instrumented,
        "entry_point": entry_point,
    }
    nonce = secrets.token_hex(16)
    run = sandbox.run(program, stdin=nonce + "\n", timeout=timeout_s, memory_mb=memory_mb)
    if run.infra_error is not None:
        return Verdict.infra_failure(run.infra_error)

    report = None
    for line in reversed(run.stdout.splitlines()):
        if line.startswith(nonce + " "):
            report = json.loads(line[len(nonce) + 1 :])
            break
    base = {"exit_code": run.exit_code, "timed_out": run.timed_out, "output_truncated": run.output_truncated}
    if report is None:
        if run.timed_out:
            reason = f"timed out after {timeout_s:g} s"
        elif run.output_truncated:
            reason = "printed more than the output limit"
        elif run.memory_exceeded:
            reason = "exceeded the memory limit"
        else:
            tail = run.stderr.strip().splitlines()[-1:] or [f"exit code {run.exit_code}"]
            reason = f"the program ended before the tests reported ({tail[0][:200]})"
        return Verdict(0.0, False, 0.0, reason, {**base, "tests": [False] * total})

    if report["load_error"] is not None:
        return Verdict(
            0.0,
            False,
            0.0,
            f"the solution failed to load: {report['load_error']}",
            {**base, "tests": [False] * total, "load_error": report["load_error"]},
        )
    outcomes = [bool(report["results"].get(str(i), False)) for i in range(total)]
    errors = report["errors"]
    if total == 0:  # tests without asserts: passing means running without an exception
        passed = "-1" not in errors
        outcomes = [passed]
        total = 1
    elif "-1" in errors:  # the test code itself raised between tests
        outcomes = [o and str(i) in report["results"] for i, o in enumerate(outcomes)]
    n_passed = sum(outcomes)
    ok = n_passed == total
    reason = f"{n_passed}/{total} tests passed"
    if not ok and errors:
        first = next(iter(errors.values()))
        reason += f"; first failure: {first}"
    return Verdict(1.0 if ok else 0.0, ok, n_passed / total, reason, {**base, "tests": outcomes, "errors": errors})
