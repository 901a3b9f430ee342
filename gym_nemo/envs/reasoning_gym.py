"""``nemo/ReasoningGym-v0``: any of reasoning-gym's ~105 procedural generators, scored by its own scorer.

``gym.make("nemo/ReasoningGym-v0", dataset="leg_counting", size=100, seed=0, **config)``: the tasks are
entries ``0..size-1`` of ``reasoning_gym.create_dataset(dataset, size=size, seed=seed, **config)``, so they
are the same for the same (dataset, size, seed, config) on every machine. Keyword arguments that are not
:class:`TextEnv`'s (``max_turns``, ``data``, ...) or this env's are the generator's config (e.g.
``min_animals=3``); ``dataset="composite"`` with ``datasets=[...]`` mixes generators.

Rows are NeMo Gym ``reasoning_gym`` rows (``question``, ``answer``, ``metadata`` at the top level, the
question as the prompt), so its rows load as they are. Ours add ``verifier_metadata`` with the dataset
name and config, so a stored row re-scores with the same scorer without regenerating anything; metadata is
stored type-preserving (tuples and sets tagged, see :mod:`gym_nemo.verifiers.json_codec`) because some scorers compare
with tuples.

Final answer: reasoning-gym's convention, ``<answer>...</answer>`` (see
:mod:`gym_nemo.verifiers.reasoning_gym` for the fallbacks). Reward: the generator's ``score_answer``
(partial credit where the generator gives it). Entries whose answer is ``None`` (puzzles with many
solutions, e.g. ``boxnet``) are scored from their metadata and have no reference answer.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Mapping, Sequence
from typing import Any

from gym_nemo.core.env import TextEnv
from gym_nemo.core.errors import ensure_installed, require
from gym_nemo.core.task import Task, input_messages
from gym_nemo.core.verdict import Verdict
from gym_nemo.verifiers.json_codec import from_json, to_json
from gym_nemo.verifiers.reasoning_gym import DEFAULT_TIMEOUT_S, VERIFIER_VERSION, score_reasoning_gym

DEFAULT_DATASET = "leg_counting"
DEFAULT_SIZE = 100
SYSTEM_PROMPT = (
    "Solve the problem, thinking step by step. Then give only the final answer inside <answer></answer> "
    "tags, e.g. <answer>42</answer>, in the format the problem asks for."
)
#: Keyword arguments that belong to the env, not to the generator's config.
_ENV_KWARGS = frozenset(inspect.signature(TextEnv.__init__).parameters) - {"self"} | {"verify_timeout_s"}


def dataset_names() -> list[str]:
    """Every registered reasoning-gym generator."""
    ensure_installed("reasoning_gym", what="nemo/ReasoningGym-v0", extra="suite")
    from reasoning_gym.factory import DATASETS

    return sorted(DATASETS)


@functools.cache
def _generate(dataset: str, size: int, seed: int, config_json: str) -> tuple[dict[str, Any], ...]:
    reasoning_gym = require("reasoning_gym", what="nemo/ReasoningGym-v0", extra="suite")
    from reasoning_gym.factory import DATASETS

    if dataset not in DATASETS:
        raise ValueError(f"unknown reasoning-gym dataset {dataset!r}; available: {', '.join(sorted(DATASETS))}")
    config = from_json(json.loads(config_json))
    generator = reasoning_gym.create_dataset(dataset, size=size, seed=seed, **config)
    spec = {"size": size, "seed": seed, **json.loads(config_json)}
    rows = []
    for i in range(size):
        entry = generator[i]
        rows.append(
            {
                "responses_create_params": {"input": [{"role": "user", "content": entry["question"]}]},
                "question": entry["question"],
                "answer": to_json(entry["answer"]),
                "metadata": to_json(entry["metadata"]),
                "verifier_metadata": {"task_id": f"rg/{dataset}/{seed}/{i}", "dataset": dataset, "config": spec},
            }
        )
    return tuple(rows)


def generate_rows(
    dataset: str = DEFAULT_DATASET, size: int = DEFAULT_SIZE, seed: int = 0, **config: Any
) -> tuple[dict[str, Any], ...]:
    """Task rows for entries ``0..size-1`` of the generator (cached per arguments)."""
    if size < 1:
        raise ValueError("size must be >= 1")
    return _generate(dataset, int(size), int(seed), json.dumps(to_json(config), sort_keys=True))


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(env kwargs, generator config)."""
    env = {k: v for k, v in kwargs.items() if k in _ENV_KWARGS}
    return env, {k: v for k, v in kwargs.items() if k not in _ENV_KWARGS}


class ReasoningGymEnv(TextEnv):
    """One reasoning-gym generator as an env; see the module docstring.

    Args (beyond :class:`TextEnv`'s):
        dataset: the generator's name (:func:`dataset_names`).
        size: how many tasks to generate.
        seed: the generator's seed.
        verify_timeout_s: CPU-time bound of one scoring (an overrun scores 0).
        **config: the generator's own config fields.
    """

    verifier_name = "reasoning_gym"
    verifier_version = VERIFIER_VERSION
    default_max_turns = 4
    default_system_prompt = SYSTEM_PROMPT

    def __init__(
        self,
        dataset: str = DEFAULT_DATASET,
        size: int = DEFAULT_SIZE,
        seed: int = 0,
        *,
        verify_timeout_s: float = DEFAULT_TIMEOUT_S,
        **kwargs: Any,
    ) -> None:
        env_kwargs, config = _split(kwargs)
        self.dataset, self.size, self.seed, self.config = dataset, size, seed, config
        self.verify_timeout_s = verify_timeout_s
        if config and env_kwargs.get("data") is not None:
            raise TypeError(f"unexpected arguments {sorted(config)} (generator config needs data=None)")
        super().__init__(**env_kwargs)

    def task_settings(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "size": self.size, "seed": self.seed, **self.config}

    @classmethod
    def bundled_rows(
        cls, dataset: str = DEFAULT_DATASET, size: int = DEFAULT_SIZE, seed: int = 0, **config: Any
    ) -> Sequence[Mapping[str, Any]]:
        return generate_rows(dataset, size, seed, **config)

    @classmethod
    def row_to_task(cls, row: Mapping[str, Any], index: int) -> Task:
        meta = row.get("verifier_metadata") or {}
        entry_meta = row.get("metadata")
        if not isinstance(entry_meta, Mapping):
            raise ValueError(f"task row {index}: a reasoning-gym row needs its entry's 'metadata'")
        dataset = meta.get("dataset") or entry_meta.get("source_dataset")
        if not isinstance(dataset, str) or not dataset:
            raise ValueError(
                f"task row {index}: no dataset name (verifier_metadata.dataset or metadata.source_dataset)"
            )
        messages = input_messages(row)
        question = row.get("question")
        if not isinstance(question, str):
            question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        answer = row.get("answer")
        task_id = str(meta.get("task_id") or row.get("task_id") or f"rg/{dataset}/row-{index}")
        return Task(
            task_id=task_id,
            messages=tuple(messages),
            hidden={
                "dataset": dataset,
                "config": meta.get("config"),  # None: the generator's default config (NeMo Gym rows)
                "entry": {"question": question, "answer": answer, "metadata": dict(entry_meta)},
            },
            row=row,
            reference=None if answer is None else f"<answer>{from_json(answer)}</answer>",
        )

    def verify(self, task: Task, answer: str) -> Verdict:
        return score_reasoning_gym(
            task.hidden["dataset"], task.hidden["config"], task.hidden["entry"], answer, timeout_s=self.verify_timeout_s
        )
