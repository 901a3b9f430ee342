"""reasoning-gym answers scored by the generator's own scorer, bounded in time.

The answer is read from the response as NeMo Gym's reasoning_gym server reads it: the last
``<answer>...</answer>`` block (reasoning-gym's convention), else the first ``\\boxed{...}`` (without nested
braces), else the whole message. The generator's ``score_answer(answer, entry)`` gives the reward (some give
partial credit; ``passed`` means 1.0). Scorers have no time limit of their own (several parse the answer with
SymPy), so they run in the verifier worker process (:mod:`gym_nemo.verifiers.worker`) with a CPU-time
bound (and a wall-time cap); an overrun, or a scorer that raises, scores 0. The scorer is rebuilt from the
dataset's name and config (the generator's default config when the row does not record one, as NeMo Gym does).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata
from typing import Any

from gym_nemo.core.verdict import Verdict
from gym_nemo.verifiers.worker import VerifierWorker, default_worker


def _version() -> str:
    try:
        return metadata.version("reasoning-gym")
    except metadata.PackageNotFoundError:
        return "missing"


VERIFIER_VERSION = f"1+reasoning-gym-{_version()}"
DEFAULT_TIMEOUT_S = 10.0


def _last_answer_tag(response: str) -> str | None:
    """The last ``<answer>...</answer>`` as ``re.finditer("<answer>(.*?)</answer>")`` would find it (the first
    closing tag after each opening one), in linear time on any input."""
    found, pos = None, 0
    while (start := response.find("<answer>", pos)) >= 0:
        end = response.find("</answer>", start + len("<answer>"))
        if end < 0:
            break
        found, pos = response[start + len("<answer>") : end], end + len("</answer>")
    return found


def _first_boxed(response: str) -> str | None:
    """The first ``\\boxed{...}`` with non-empty contents and no brace inside (NeMo Gym's ``\\boxed\\{([^}]+)\\}``)."""
    start = response.find("\\boxed{")
    close = -1
    while start >= 0:
        if close < start + len("\\boxed{"):
            close = response.find("}", start + len("\\boxed{"))
            if close < 0:
                return None
        if close > start + len("\\boxed{"):
            return response[start + len("\\boxed{") : close]
        start = response.find("\\boxed{", start + 1)
    return None


def extract_answer(response: str) -> tuple[str, str]:
    """``(answer, how)``: ``how`` is ``"answer_tag"``, ``"boxed"`` or ``"whole_message"``."""
    tagged = _last_answer_tag(response)
    if tagged is not None:
        return tagged.strip(), "answer_tag"
    boxed = _first_boxed(response)
    if boxed is not None:
        return boxed.strip(), "boxed"
    return response.strip(), "whole_message"


def score_reasoning_gym(
    dataset: str,
    config: Mapping[str, Any] | None,
    entry: Mapping[str, Any],
    response: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    worker: VerifierWorker | None = None,
) -> Verdict:
    """Score ``response`` on ``entry`` (``question``, ``answer``, ``metadata``, encoded with
    :func:`~gym_nemo.verifiers.json_codec.to_json`) with generator ``dataset`` built from ``config`` (``None``:
    its defaults)."""
    answer, how = extract_answer(response)
    details: dict[str, Any] = {"dataset": dataset, "extracted_answer": answer, "extraction": how}
    result = (worker or default_worker()).call(
        "reasoning_gym", timeout_s, dataset=dataset, config=config, answer=answer, entry=dict(entry)
    )
    note = "" if how == "answer_tag" else " (no <answer>...</answer> block was found, so the whole message was scored)"
    if how == "boxed":
        note = " (no <answer>...</answer> block was found; the \\boxed{} answer was scored)"
    if result.get("timed_out") or result.get("died") or result.get("error"):
        what = "took too long" if result.get("timed_out") else "could not score it"
        details.update({k: result[k] for k in ("timed_out", "died", "error") if result.get(k)})
        return Verdict(reward=0.0, passed=False, reason=f"the scorer {what}{note}", details=details)
    reward = min(max(float(result["reward"]), 0.0), 1.0)
    passed = reward >= 1.0
    shown = answer if len(answer) <= 200 else f"{answer[:200]}..."
    reason = "correct" if passed else f"the answer {shown!r} scored {reward:g}"
    return Verdict(reward=reward, passed=passed, fraction=reward, reason=reason + note, details=details)
