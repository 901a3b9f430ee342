"""nemo/InstructionFollowing-v0: IFBench and IFEval-style instructions, checked offline."""

import json
import math
from pathlib import Path

import gymnasium as gym
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gym_nemo.envs.instruction_following import InstructionFollowingEnv
from gym_nemo.verifiers.instructions import check_instructions, registry, verify_instructions

DATA = Path(__file__).resolve().parent / "data" / "nemo_gym"

ROW = {
    "id": 7,
    "prompt": "Describe a cat.",
    "instruction_id_list": ["keywords:existence", "detectable_format:title", "last_word:last_word_answer"],
    "kwargs": [{"keywords": ["whiskers"]}, None, {"last_word": "purr"}],
    "responses_create_params": {"input": [{"role": "user", "content": "Describe a cat."}]},
}


@pytest.fixture(scope="module")
def env():
    env = InstructionFollowingEnv()
    yield env
    env.close()


def test_bundled_ifbench_set_and_its_references(env) -> None:
    assert len(env.tasks) == 276  # 294 minus the 18 needing NLTK data no package ships
    with_reference = [t for t in env.tasks if t.reference]
    assert len(with_reference) == 69
    for task in with_reference:
        verdict = env.verify(task, task.reference)
        assert verdict.reward == 1.0 and verdict.passed, (task.task_id, verdict.reason)
        assert all(i["followed"] for i in verdict.details["instructions"])


def test_known_right_and_wrong_answers_binary_and_fraction() -> None:
    good = "<<A Cat>>\nA cat has long whiskers and loves to purr"
    half = "A cat has whiskers. It sleeps all day and does not bark."  # keyword yes, title no, last word no
    for grading_mode, rewards in {"binary": (1.0, 0.0, 0.0), "fraction": (1.0, 1 / 3, 0.0)}.items():
        env = InstructionFollowingEnv(data=[ROW], grading_mode=grading_mode)
        task = env.tasks[0]
        got = [env.verify(task, text).reward for text in (good, half, "Dogs bark.")]
        assert got == pytest.approx(rewards), grading_mode
    verdict = verify_instructions(ROW["instruction_id_list"], ROW["kwargs"], half, grading_mode="fraction")
    assert [i["followed"] for i in verdict.details["instructions"]] == [True, False, False]
    assert verdict.details["follow_instruction_list"] == [True, False, False] and not verdict.passed
    assert "not followed: detectable_format:title, last_word:last_word_answer" in verdict.reason


def test_wrong_answer_gets_feedback_naming_the_missed_instructions() -> None:
    env = gym.make("nemo/InstructionFollowing-v0", max_attempts=2)
    try:
        env.reset(options={"task": ROW})
        obs, reward, term, trunc, _ = env.step("A cat.")
        assert (reward, term, trunc) == (0.0, False, False)
        assert "keywords:existence" in obs and "1 attempt(s) left" in obs
        obs, reward, term, _, info = env.step("<<Cats>>\nWhiskers everywhere, and a purr")
        assert reward == 1.0 and term and info["verdict"]["details"]["follow_all_instructions"]
    finally:
        env.close()


def test_nemo_gym_rows_load_through_options() -> None:
    env = gym.make("nemo/InstructionFollowing-v0")
    try:
        for server in ("instruction_following", "ifbench"):
            for line in (DATA / server / "example.jsonl").read_text().splitlines():
                row = json.loads(line)
                if any(i not in registry() for i in row["instruction_id_list"]):
                    with pytest.raises(ValueError, match="cannot be checked here"):
                        env.reset(options={"task": row})
                    continue
                obs, info = env.reset(options={"task": row})
                assert info["task_id"] == str(row["id"]) and row["prompt"][:40] in obs
                *_, info = env.step("Some answer.")
                assert info["task_row"] == row
                assert len(info["verdict"]["details"]["instructions"]) == len(row["instruction_id_list"])
    finally:
        env.close()


def test_bad_rows_are_rejected() -> None:
    bad = [
        {**ROW, "instruction_id_list": []},
        {**ROW, "kwargs": [{}]},
        {**ROW, "instruction_id_list": ["no:such_instruction"], "kwargs": [{}]},
        {**ROW, "grading_mode": "mean"},
    ]
    for row in bad:
        with pytest.raises(ValueError):
            InstructionFollowingEnv.row_to_task(row, 0)
    with pytest.raises(ValueError):
        InstructionFollowingEnv(grading_mode="half")


def test_extension_checkers() -> None:
    ids = [
        "first_word:first_word_sent",
        "count:lowercase_counting",
        "letters:letter_counting",
        "paragraphs:paragraphs",
        "punctuation:punctuation_exclamation",
    ]
    kwargs = [{"first_word": "Yes"}, {"N": 2}, {"N": 10, "relation": "less than"}, {}, {}]
    assert check_instructions(ids, kwargs, "Yes I can. Yes it is.") == [True, False, False, False, True]
    assert check_instructions(ids[3:], kwargs[3:], "One part *** Two part!") == [True, False]
    assert check_instructions(["letters:letter_counting"], [{"N": 3, "relation": "sideways"}], "abc") == [False]


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=300))
def test_fuzzed_answers_never_crash(text: str) -> None:
    env = _fuzz_env()
    env.reset(options={"task": ROW})
    obs, reward, terminated, truncated, _ = env.step(text)
    assert isinstance(obs, str) and math.isfinite(reward) and 0.0 <= reward <= 1.0
    assert terminated or truncated or "[error]" in obs


_ENV: list[InstructionFollowingEnv] = []


def _fuzz_env() -> InstructionFollowingEnv:
    if not _ENV:
        _ENV.append(InstructionFollowingEnv(data=[ROW], grading_mode="fraction"))
    return _ENV[0]


def test_cli_rollouts_play_tasks_with_references_and_rescore_as_nemo_gym_rows(tmp_path, capsys) -> None:
    from gym_nemo.cli import main
    from gym_nemo.integrations.nemo_gym import score, to_rollout_row

    out = tmp_path / "if.jsonl"
    args = ["rollout", "nemo/InstructionFollowing-v0", "--num-episodes", "12", "--num-envs", "2"]
    assert main([*args, "--vectorization", "sync", "--corrupt-rate", "0.5", "--out", str(out), "--quiet"]) == 0
    assert "playing the 69 of 276 tasks that have a reference answer" in capsys.readouterr().out
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["reward"] for r in records} == {0.0, 1.0}
    for record in records:
        row = to_rollout_row(record)
        assert row["id"] == record["id"] and "messages" not in row
        assert score(row, "ifbench")["reward"] == record["reward"]
