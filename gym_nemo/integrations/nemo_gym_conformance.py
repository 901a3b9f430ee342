"""Differential conformance: our native verifiers against what NeMo Gym's real servers answered for the same rows.

The cases (``tests/data/nemo_gym/conformance/<server>.jsonl``, made by ``scripts/nemo_gym_conformance.py`` in
a Python 3.12 venv with ``nemo-gym``) each hold a verify request (task fields + ``response``), env kwargs, and
NeMo Gym's answer (HTTP status, reward, its extracted answer). :func:`compare` scores every case with
:func:`gym_nemo.integrations.nemo_gym.score` and sorts them into agreements and disagreements; every
disagreement must be one of ``KNOWN_DISAGREEMENTS``, each with the reason NeMo Gym is the one that is wrong.
``answer=`` replaces the stored answers by live ones (a running NeMo Gym server).

    python -m gym_nemo.integrations.nemo_gym_conformance [CASES_DIR]     # per-family figures
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gym_nemo.integrations.nemo_gym import score

_VERIFIER_METADATA = (
    "NeMo Gym 0.4.0's request model needs instruction_id_list, kwargs, prompt and id at the top level and answers "
    "422; gym_nemo also reads them from verifier_metadata (the newer row format) and scores the row"
)
_MATH_VERIFY_CLOCK = (
    "math-verify's own 5 s wall-clock limit on one comparison ran out inside NeMo Gym's check (SymPy on "
    "(1+sqrt3)^4033 takes ~6 s here), so its reward depends on the machine's speed and load; NeMo Gym's own "
    "recorded rollout scored this response 1.0, as ours does (a CPU-time bound on the whole check, not wall time)"
)
_NLTK = (
    "not a NeMo Gym error: words:start_verb and ratio:stop_words need NLTK's POS tagger and stopwords corpus, which "
    "no package ships offline; gym_nemo rejects these rows with a ValueError naming the instruction instead of "
    "scoring them 0"
)
#: (server, case) -> why NeMo Gym's answer is wrong, or why we cannot answer: every difference, explained.
KNOWN_DISAGREEMENTS: dict[tuple[str, str], str] = {
    **{("instruction_following", f"rollout-{n}/verifier-metadata"): _VERIFIER_METADATA for n in range(5)},
    # ifbench rollouts 0, 1 and 4 we reject in any format (NLTK), as NeMo Gym rejects their verifier_metadata form
    **{("ifbench", f"rollout-{n}/verifier-metadata"): _VERIFIER_METADATA for n in (2, 3)},
    **{("math_with_judge", f"rollout-1{v}"): _MATH_VERIFY_CLOCK for v in ("", "/split-messages", "/reasoning-item")},
    **{("ifbench", f"rollout-{n}{v}"): _NLTK for n in (0, 1, 4) for v in ("", "/earlier-messages")},
}

#: Math checks that may take seconds of SymPy get this bound (NeMo Gym's 10 s is wall time on its machine).
SLOW_CHECK_S = 120.0
DEFAULT_CASES = Path("tests") / "data" / "nemo_gym" / "conformance"


@dataclass
class Outcome:
    """One family's comparison."""

    server: str
    agree: list[str] = field(default_factory=list)
    disagree: dict[str, str] = field(default_factory=dict)  # case -> what differs

    @property
    def unexplained(self) -> dict[str, str]:
        return {c: d for c, d in self.disagree.items() if (self.server, c) not in KNOWN_DISAGREEMENTS}


def load_cases(directory: str | Path = DEFAULT_CASES) -> dict[str, list[dict[str, Any]]]:
    """Every server's cases, by server."""
    cases: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(Path(directory).glob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if rows:
            cases[path.stem] = rows
    return cases


def ours(case: Mapping[str, Any]) -> dict[str, Any]:
    """gym_nemo's answer for a case: ``{"status": 200, "reward", "extracted_answer", "result"}``, or ``{"status":
    "ValueError: ..."}`` where we reject the row."""
    kwargs = dict(case.get("env_kwargs") or {})
    if case["server"] in ("math_with_judge", "polymath"):
        kwargs.setdefault("verify_timeout_s", SLOW_CHECK_S)
    if case["server"] == "code_gen":  # LiveCodeBench's global bound, (timeout + 1) x tests + 5 s, not our 60 s
        tests = case["row"].get("verifier_metadata", {}).get("unit_tests", {}).get("inputs") or []
        kwargs.setdefault("total_timeout_s", 11.0 * max(len(tests), 6) + 5)
    try:
        verdict = score(case["row"], case["server"], **kwargs)
    except ValueError as exc:
        return {"status": f"ValueError: {exc}"}
    details = verdict.get("details") or {}
    return {"status": 200, "reward": verdict["reward"], "infra_error": verdict.get("infra_error"), **details}


def differs(server: str, theirs: Mapping[str, Any], mine: Mapping[str, Any]) -> str | None:
    """What differs between NeMo Gym's answer and ours, or ``None``. Rewards must be equal, code_gen's per-test
    result lists too; a row NeMo Gym rejects (422: fields missing) must be one we reject (``ValueError``)."""
    if mine.get("infra_error"):
        return f"infrastructure error on our side: {mine['infra_error']}"
    if theirs.get("status") == 422 and str(mine.get("status")).startswith("ValueError"):
        return None
    if theirs.get("status") != mine.get("status"):
        return f"NeMo Gym status {theirs.get('status')}, ours {mine.get('status')}"
    if theirs.get("status") != 200:
        return None
    if float(theirs["reward"]) != float(mine["reward"]):
        return f"reward: NeMo Gym {theirs['reward']}, ours {mine['reward']}"
    if server == "code_gen" and theirs.get("result") is not None and theirs["result"] != mine.get("result"):
        return f"result: NeMo Gym {theirs['result']}, ours {mine.get('result')}"
    return None


def compare(
    cases: list[dict[str, Any]], answer: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
) -> Outcome:
    """Score one server's cases with gym_nemo; compare with the stored answers, or with ``answer(case)``."""
    outcome = Outcome(cases[0]["server"])
    for case in cases:
        theirs = answer(case) if answer is not None else case["nemo_gym"]
        what = differs(case["server"], theirs, ours(case))
        if what is None:
            outcome.agree.append(case["case"])
        else:
            outcome.disagree[case["case"]] = what
    return outcome


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    cases = load_cases(args[0] if args else DEFAULT_CASES)
    if not cases:
        print(f"no cases in {args[0] if args else DEFAULT_CASES}", file=sys.stderr)
        return 2
    failed = 0
    print(f"{'server':<24}{'cases':>6}{'agree':>7}{'known':>7}{'unexplained':>12}")
    for server, rows in cases.items():
        outcome = compare(rows)
        known = len(outcome.disagree) - len(outcome.unexplained)
        print(f"{server:<24}{len(rows):>6}{len(outcome.agree):>7}{known:>7}{len(outcome.unexplained):>12}")
        for case, what in outcome.unexplained.items():
            print(f"    {case}: {what}")
        failed += len(outcome.unexplained)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
