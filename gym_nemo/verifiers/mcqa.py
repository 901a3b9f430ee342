"""Multiple-choice answers: extract the chosen letter from free text, reward 1.0 iff it is the right one.

:func:`extract_choice` tries these rules in order and uses the first that yields exactly one allowed letter
(within a rule, the last occurrence in the text wins, since models restate options before concluding):

1. ``boxed``: ``\\boxed{C}``, also ``\\boxed{\\text{C}}``, ``\\boxed{(C)}``, ``\\boxed{C. option text}``.
2. ``answer_phrase``: "Answer: C", "**Final answer:** (C)", "The answer is C", "the correct option is C";
   a letter followed by "or"/"and"/"," and another letter ("A or B") is a hedge and does not count.
3. ``answer_text``: "Answer: <the full text of one option>" (case- and whitespace-insensitive).
4. ``last_line``: the last non-empty line is just a letter ("C", "C.", "**C**", "(C)") or starts with one
   followed by the option's text ("C. Correctness", "(C) Correctness").
5. ``parenthesized``: the last "(C)" anywhere in the text.

Only uppercase letters among the question's options count, so the article "a" or a pronoun "I" are never
read as answers. A response with no letter by any rule gets a format note saying how to answer. Pure and
fast (regular expressions on the text), so it needs no worker process.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from gym_nemo.core.verdict import Verdict

VERIFIER_VERSION = "1"

_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
# Linear time on any input: keywords are found first; what follows one is read from a short window with
# whitespace and markdown collapsed, by patterns with no two adjacent open-ended repeats.
_KEYWORD = re.compile(r"(?i)(?<![A-Za-z])(?:answer|option|choice)(?![A-Za-z])")
_WINDOW = 80
_AFTER = re.compile(
    r"(?:(?i:is)\s?:?\s?|[:=-]\s?)?(?:(?i:option|choice)\s)?[\(\[]?([A-Z])[\)\]]?(?![A-Za-z0-9])"
    r"(?P<hedge>\s?(?i:or|and)\s[\(\[]?[A-Z][\)\]]?(?![A-Za-z0-9])|\s?[/,]\s?[\(\[]?[A-Z][\)\]]?(?![A-Za-z0-9]))?"
)
_REST = re.compile(r"(?:(?i:is)\s?:?|:)\s?(.*)")
_PAREN = re.compile(r"\(([A-Z])\)")
_MARKUP = re.compile(r"[*_`$\s]+")


def _collapse(text: str) -> str:
    """Markdown emphasis and math dollars removed, whitespace runs (newlines included) made one space."""
    return " ".join(_MARKUP.sub(" ", text).split())


def _normalise(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .")


def _strip_text_wrappers(text: str) -> str:
    text = text.strip()
    for _ in range(4):
        match = re.fullmatch(r"\\(?:text|textbf|mathrm)\{(.*)\}", text, re.DOTALL)
        if not match:
            return text
        text = match.group(1).strip()
    return text


def _letter_of(fragment: str, letters: Sequence[str], options: Mapping[str, str]) -> str | None:
    """A fragment that is one letter, optionally wrapped or followed by that option's text."""
    fragment = _strip_text_wrappers(_MARKUP.sub(" ", fragment).strip())
    match = re.fullmatch(r"[\(\[]?([A-Z])[\)\]]?(?:[.:)]?\s*(.*))?", fragment, re.DOTALL)
    if not match or match.group(1) not in letters:
        return None
    rest = _normalise(match.group(2) or "")
    if rest and _normalise(options.get(match.group(1), "")) != rest:
        return None
    return match.group(1)


def extract_choice(
    text: str, letters: Sequence[str], options: Mapping[str, str] | None = None
) -> tuple[str | None, str | None]:
    """``(letter, rule)`` per the module docstring; ``(None, None)`` if no rule finds one allowed letter."""
    options = options or {}
    for inner in reversed(_BOXED.findall(text)):
        letter = _letter_of(inner, letters, options)
        if letter:
            return letter, "boxed"
    keywords = list(_KEYWORD.finditer(text))
    for keyword in reversed(keywords):
        after = _AFTER.match(_collapse(text[keyword.end() : keyword.end() + _WINDOW]))
        if after and after.group(1) in letters and not after.group("hedge"):
            return after.group(1), "answer_phrase"
    by_text = {_normalise(v): k for k, v in options.items() if _normalise(v)}
    for keyword in reversed(keywords):
        if keyword.group().lower() != "answer":
            continue
        limit = keyword.end() + _WINDOW + max(map(len, options.values()), default=0)
        line_end = text.find("\n", keyword.end() + 1, limit)  # the rest of the line, looked at up to limit
        rest = _REST.match(_collapse(text[keyword.end() : limit if line_end < 0 else line_end]))
        letter = by_text.get(_normalise(_strip_text_wrappers(rest.group(1)))) if rest else None
        if letter is not None and letter in letters:
            return letter, "answer_text"
    lines = [line for line in text.splitlines() if line.strip()]
    if lines:
        letter = _letter_of(lines[-1], letters, options)
        if letter:
            return letter, "last_line"
    for found in reversed(_PAREN.findall(text)):
        if found in letters:
            return found, "parenthesized"
    return None, None


def verify_choice(expected: str, response: str, options: Mapping[str, str]) -> Verdict:
    """Reward 1.0 iff the letter extracted from ``response`` is ``expected``; ``options`` maps letter -> text."""
    letters = sorted(options) or list("ABCD")
    letter, rule = extract_choice(response, letters, options)
    details: dict[str, Any] = {"expected_answer": expected, "extracted_answer": letter, "rule": rule}
    if letter is None:
        reason = (
            f"no answer letter found; end your response with a line 'Answer: X', where X is one of {', '.join(letters)}"
        )
        return Verdict(reward=0.0, passed=False, reason=reason, details=details)
    if letter == expected.strip().upper():
        return Verdict(reward=1.0, passed=True, reason=f"correct ({letter})", details=details)
    return Verdict(reward=0.0, passed=False, reason=f"the answer {letter} is not correct", details=details)
