"""``Verdict``: what a verifier concluded about one final answer."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Verdict:
    """The result of verifying one submission.

    ``reward`` is what the env pays for it; ``fraction`` the share of checks passed (tests,
    instructions) where that is meaningful; ``details`` verifier-specific results (per-test outcomes);
    ``reason`` a short human-readable summary that the env may show as feedback. ``infra_error`` is set
    when the verifier could not do its job (sandbox down, judge unreachable): such a verdict says nothing
    about the answer and must never be read as a failure.
    """

    reward: float
    passed: bool
    fraction: float | None = None
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    infra_error: str | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.reward):
            raise ValueError(f"verifier produced a non-finite reward: {self.reward!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def infra_failure(cls, message: str) -> Verdict:
        return cls(
            reward=0.0, passed=False, reason="verification failed for infrastructure reasons", infra_error=message
        )
