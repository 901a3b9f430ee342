"""``nemo/TargetChar-v0``: a toy task a tiny random model can learn in minutes, for training examples and tests.

Each task asks for a reply made only of one letter ("Reply with the letter a repeated, nothing else.").
The reward is the share of the reply's non-whitespace characters that are that letter (case-insensitive):
a random policy earns a few percent, a policy that learned the task earns 1.0. The reward is graded, so
group sampling sees different rewards within a group from the first step (GRPO learns only from those),
and it depends only on the reply's text, so token-level and text-level policies are scored alike.

It is a real :class:`~gym_nemo.core.env.TextEnv` (same contract, bad input, records, ``max_attempts`` with
feedback for multi-turn episodes with a reward per attempt), not a benchmark: use it to check that a training
loop learns, then switch ``--env`` to a real task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gym_nemo.core.env import TextEnv
from gym_nemo.core.task import Task, input_messages
from gym_nemo.core.verdict import Verdict

LETTERS = "aeost"
PROMPT = "Reply with the letter {letter} repeated, nothing else."
VERIFIER_VERSION = "1"


def target_char_row(letter: str) -> dict[str, Any]:
    """A NeMo Gym-style row asking for a reply made of ``letter``."""
    return {
        "responses_create_params": {"input": [{"role": "user", "content": PROMPT.format(letter=letter)}]},
        "expected_answer": letter,
        "verifier_metadata": {"task_id": f"target-char/{letter}"},
    }


def share_of(letter: str, reply: str) -> float:
    """Share of the non-whitespace characters of ``reply`` equal to ``letter`` (case-insensitive); 0 if none."""
    chars = [c for c in reply.lower() if not c.isspace()]
    return sum(c == letter.lower() for c in chars) / len(chars) if chars else 0.0


class TargetCharEnv(TextEnv):
    """Reply with one letter repeated; reward = the share of the reply's characters that are that letter."""

    verifier_name = "target_char_share"
    verifier_version = VERIFIER_VERSION
    default_max_turns = 4
    default_system_prompt = "You are a helpful assistant."

    @classmethod
    def bundled_rows(cls) -> Sequence[Mapping[str, Any]]:
        return [target_char_row(letter) for letter in LETTERS]

    @classmethod
    def row_to_task(cls, row: Mapping[str, Any], index: int) -> Task:
        letter = row.get("expected_answer")
        if not (isinstance(letter, str) and len(letter) == 1 and not letter.isspace()):
            raise ValueError(f"task row {index}: expected_answer must be one non-space character, got {letter!r}")
        meta = row.get("verifier_metadata") or {}
        return Task(
            task_id=str(meta.get("task_id") or f"row-{index}"),
            messages=tuple(input_messages(row)),
            hidden={"letter": letter},
            row=row,
            reference=letter * 8,
        )

    def verify(self, task: Task, answer: str) -> Verdict:
        share = share_of(task.hidden["letter"], answer)
        return Verdict(
            reward=share,
            passed=share == 1.0,
            fraction=share,
            reason=f"{share:.0%} of the characters are {task.hidden['letter']!r}",
        )
