"""Multiple-choice answers: extract the chosen letter from free text, reward 1.0 iff it is the right one.

:func:`verify_choice` grades in one of NeMo Gym's mcqa grading modes, with its semantics, or in gym_nemo's own
``any_format`` mode (:func:`extract_choice`, the default of the bundled MMLU rows):

* ``strict_single_letter_boxed`` (NeMo Gym's default): the first ``\\boxed{...}`` holding one uppercase letter,
  with only non-letters around it (``\\boxed{B}``, ``\\boxed{(B)}``, ``\\boxed{{B}}``); a letter that is not an
  option gives no answer.
* ``lenient_boxed``: as strict, else the one option whose text appears in the first ``\\boxed{...}``.
* ``lenient_answer_colon``: the rest of the line after the first "answer:" is one option letter or exactly one
  option's text (``\\text{}`` wrappers, case and whitespace ignored).
* ``lenient_answer_colon_md``: the first "Answer: X" allowing markdown emphasis around "Answer".

A row's ``template_metadata.output_regex`` (a pattern or a list) comes first in every mode but ``any_format``:
the last match of the first pattern that yields an answer, case-insensitive; a captured single letter counts
even when it is not an option (NeMo Gym trusts the template), else it must equal one option's text.

:func:`extract_choice` (``any_format``) tries these rules in order and uses the first that yields exactly one
allowed letter (within a rule, the last occurrence in the text wins, since models restate options before concluding):

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

VERIFIER_VERSION = "2"  # 2: NeMo Gym's grading modes and output_regex; \\boxed{{B}}

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
        match = re.fullmatch(r"(?:\\(?:text|textbf|mathrm))?\{(.*)\}", text, re.DOTALL)
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


# ---------------------------------------------------------------------------- NeMo Gym's grading modes
NEMO_GYM_MODES = ("strict_single_letter_boxed", "lenient_boxed", "lenient_answer_colon", "lenient_answer_colon_md")
GRADING_MODES = (*NEMO_GYM_MODES, "any_format")
DEFAULT_GRADING_MODE = "strict_single_letter_boxed"  # NeMo Gym's, for rows that name none

_STRICT_BOXED = re.compile(r"\\boxed\{\s*[^A-Za-z]*([A-Z])[^A-Za-z]*\s*\}")
_FIRST_BOXED = re.compile(r"\\boxed\{\s*(.*?)\s*\}", re.DOTALL)
_TEXT_WRAPPER = re.compile(r"\\text\{\s*(.*?)\s*\}", re.DOTALL)
_ANSWER_COLON = re.compile(r"(?i)answer\s*:\s*(.+)")
_ANSWER_COLON_MD = re.compile(r"(?i)[*_]{0,2}Answer[*_]{0,2}\s*:[*_\s]{0,2}\s*([A-Z])(?![a-zA-Z0-9])")
# Letters in other scripts that templates' regexes may capture, read as A-D.
_FOREIGN_LETTERS = str.maketrans(
    {c: f" {letter}" for chars, letter in (("أঅＡ", "A"), ("বبＢ", "B"), ("جডＣ", "C"), ("دঢＤ", "D")) for c in chars}
)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _unwrap_text(text: str) -> str:
    while (match := _TEXT_WRAPPER.fullmatch(text)) is not None:
        text = match.group(1)
    return text


def _strict_boxed(text: str, letters: Sequence[str]) -> str | None:
    match = _STRICT_BOXED.search(text)
    return match.group(1) if match and match.group(1) in letters else None


def _option_in_boxed(text: str, options: Mapping[str, str]) -> str | None:
    match = _FIRST_BOXED.search(text)
    if not match:
        return None
    candidates = {_norm(match.group(1)), _norm(_unwrap_text(match.group(1)))}
    found = {k for k, v in options.items() if _norm(v) and any(_norm(v) in c for c in candidates)}
    return found.pop() if len(found) == 1 else None


def _answer_colon(text: str, letters: Sequence[str], options: Mapping[str, str]) -> str | None:
    match = _ANSWER_COLON.search(text)
    if not match:
        return None
    candidate = _unwrap_text(match.group(1)).strip()
    if len(candidate) == 1 and candidate.isalpha() and candidate.upper() in letters:
        return candidate.upper()
    return next((k for k, v in options.items() if _norm(v) == _norm(candidate)), None)


def _answer_colon_md(text: str, letters: Sequence[str]) -> str | None:
    match = _ANSWER_COLON_MD.search(text)
    return match.group(1).upper() if match and match.group(1).upper() in letters else None


def _template_regex(text: str, patterns: str | Sequence[str], options: Mapping[str, str]) -> str | None:
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        try:
            matches = re.findall(pattern, text, re.IGNORECASE)
        except re.error:
            continue
        if not matches:
            continue
        last = matches[-1] if isinstance(matches[-1], str) else next((g for g in matches[-1] if g), "")
        captured = last.strip().translate(_FOREIGN_LETTERS).strip().upper()
        if len(captured) == 1 and captured.isalpha():
            return captured
        letter = next((k for k, v in options.items() if _norm(v) == _norm(captured)), None)
        if letter is not None:
            return letter
    return None


def grade_choice(
    text: str,
    options: Mapping[str, str],
    grading_mode: str = DEFAULT_GRADING_MODE,
    output_regex: str | Sequence[str] | None = None,
) -> tuple[str | None, str | None]:
    """``(letter, rule)`` read from ``text`` in ``grading_mode`` (see the module docstring), ``output_regex`` first."""
    if grading_mode not in GRADING_MODES:
        raise ValueError(f"grading_mode must be one of {GRADING_MODES}, got {grading_mode!r}")
    letters = sorted(options)
    if grading_mode == "any_format":
        return extract_choice(text, letters, options)
    text = text.strip()
    if not text:
        return None, None
    if output_regex:
        letter = _template_regex(text, output_regex, options)
        if letter is not None:
            return letter, "output_regex"
    if grading_mode == "lenient_answer_colon":
        letter = _answer_colon(text, letters, options)
    elif grading_mode == "lenient_answer_colon_md":
        letter = _answer_colon_md(text, letters)
    else:
        letter = _strict_boxed(text, letters)
        if letter is None and grading_mode == "lenient_boxed":
            letter = _option_in_boxed(text, options)
    return letter, (grading_mode if letter is not None else None)


_HOW = {
    "any_format": "end your response with a line 'Answer: X'",
    "strict_single_letter_boxed": "put only the letter in \\boxed{X}",
    "lenient_boxed": "put the letter in \\boxed{X}",
    "lenient_answer_colon": "end with a line 'Answer: X'",
    "lenient_answer_colon_md": "end with a line 'Answer: X'",
}


def verify_choice(
    expected: str,
    response: str,
    options: Mapping[str, str],
    *,
    grading_mode: str = "any_format",
    output_regex: str | Sequence[str] | None = None,
) -> Verdict:
    """Reward 1.0 iff the letter read from ``response`` in ``grading_mode`` is ``expected``; ``options`` maps
    letter -> text."""
    options = options or {letter: "" for letter in "ABCD"}
    letters = sorted(options)
    letter, rule = grade_choice(response, options, grading_mode, output_regex)
    details: dict[str, Any] = {
        "expected_answer": expected,
        "extracted_answer": letter,
        "rule": rule,
        "grading_mode": grading_mode,
    }
    if letter is None:
        reason = f"no answer letter found; {_HOW[grading_mode]}, where X is one of {', '.join(letters)}"
        return Verdict(reward=0.0, passed=False, reason=reason, details=details)
    if letter == expected.strip().upper():
        return Verdict(reward=1.0, passed=True, reason=f"correct ({letter})", details=details)
    return Verdict(reward=0.0, passed=False, reason=f"the answer {letter} is not correct", details=details)
