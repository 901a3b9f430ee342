"""An LLM judge for answer equivalence, through the ``openai`` client against any OpenAI-compatible endpoint.

Used where rule-based checks cannot decide (e.g. ``nemo/Math-v0`` with ``judge=`` when math-verify says
"not equal"). It follows NeMo Gym math_with_judge's protocol: the judge sees the problem and two answers and
ends with ``[[A=B]]`` (equivalent) or ``[[A!=B]]`` (different); it is asked in both orders (expected answer
first, then the candidate first) to cancel position bias, and the answers are equivalent only if both say
so. The first label in the judge's text counts.

A judge that cannot be reached, times out, errors, or answers without a label raises
:class:`~gym_nemo.core.errors.InfraError`: the answer was not judged, so it must not score 0. (NeMo Gym
counts an unlabeled judgment as "different"; here that is an infrastructure error instead.)

Needs the ``[judge]`` extra (``pip install gym-nemo[judge]``). The prompt is our own wording of the same
protocol; ``temperature=0`` by default, though a remote model is only as deterministic as its server.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gym_nemo.core.errors import InfraError, require

VERIFIER_VERSION = "1"
EQUAL_LABEL = "[[A=B]]"
NOT_EQUAL_LABEL = "[[A!=B]]"

SYSTEM_PROMPT = f"""You are a careful, impartial judge of mathematical answers. You are shown a problem and the \
final answers of two assistants, A and B. Decide whether the two answers are mathematically equivalent: the \
same value, expression, set or object, possibly written differently. Ignore formatting, units of presentation \
and the wording around the answer; do not solve the problem yourself and do not judge which answer is right.

End your reply with exactly one verdict label:
{EQUAL_LABEL} if the answers are equivalent
{NOT_EQUAL_LABEL} if they are different"""

USER_TEMPLATE = """## Problem
{question}

## Answer of assistant A
{first}

## Answer of assistant B
{second}"""


@dataclass(frozen=True)
class JudgeConfig:
    """Where the judge is and how to call it.

    ``api_key`` defaults to ``$OPENAI_API_KEY``, or ``"EMPTY"`` (local servers such as vLLM ignore it).
    ``max_retries`` is the openai client's own retry count for connection errors and 5xx replies.
    """

    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0
    max_retries: int = 2
    temperature: float = 0.0
    max_tokens: int | None = 1024

    @classmethod
    def coerce(cls, value: JudgeConfig | Mapping[str, Any]) -> JudgeConfig:
        """A config from itself or from a dict of its fields (what ``gym.make(..., judge={...})`` passes)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            return cls(**value)
        raise TypeError(f"judge must be a JudgeConfig or a dict with base_url and model, got {type(value).__name__}")


def parse_judgment(text: str) -> bool | None:
    """``True`` for [[A=B]], ``False`` for [[A!=B]] (the first label that appears), ``None`` if neither does."""
    equal, different = text.find(EQUAL_LABEL), text.find(NOT_EQUAL_LABEL)
    if equal < 0 and different < 0:
        return None
    if equal < 0:
        return False
    if different < 0:
        return True
    return equal < different


class LLMJudge:
    """Asks an OpenAI-compatible chat model whether two answers are equivalent (see the module docstring)."""

    def __init__(self, config: JudgeConfig | Mapping[str, Any]) -> None:
        self.config = JudgeConfig.coerce(config)
        openai = require("openai", what="the LLM judge", extra="judge")
        self._openai = openai
        self._client = openai.OpenAI(
            base_url=self.config.base_url,
            api_key=self.config.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
            timeout=self.config.timeout_s,
            max_retries=self.config.max_retries,
        )

    def chat(self, messages: list[dict[str, str]]) -> str:
        """The judge model's reply to ``messages`` (its text); ``InfraError`` when there is none."""
        kwargs: dict[str, Any] = {"model": self.config.model, "messages": messages}
        kwargs["temperature"] = self.config.temperature
        if self.config.max_tokens is not None:
            kwargs["max_tokens"] = self.config.max_tokens
        try:
            completion = self._client.chat.completions.create(**kwargs)
        except self._openai.OpenAIError as exc:
            raise InfraError(f"{type(exc).__name__}: {exc}") from exc
        choices = getattr(completion, "choices", None) or []
        return (choices[0].message.content or "") if choices else ""

    def ask(self, question: str, first: str, second: str) -> tuple[bool, dict[str, Any]]:
        """One judgment: (equivalent?, a record of the exchange). Raises InfraError if there is none."""
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": USER_TEMPLATE.format(question=question, first=first, second=second)},
        ]
        text = self.chat(messages)
        record = {"messages": messages, "model": self.config.model, "judgment": text}
        verdict = parse_judgment(text)
        if verdict is None:
            raise InfraError(f"the judge's reply has no {EQUAL_LABEL} or {NOT_EQUAL_LABEL} label: {text[:200]!r}")
        return verdict, record

    def equivalent(self, question: str, expected: str, answer: str) -> tuple[bool, list[dict[str, Any]]]:
        """Whether ``answer`` is equivalent to ``expected``: both orders must say so (the second is asked
        only when the first says yes). Returns the verdict and the judge exchanges."""
        equal, first = self.ask(question, expected, answer)
        if not equal:
            return False, [first]
        equal, second = self.ask(question, answer, expected)
        return equal, [first, second]

    def close(self) -> None:
        self._client.close()
