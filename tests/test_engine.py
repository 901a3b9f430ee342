"""The episode engine: the records of every way of playing an episode are what they were before the one-engine
refactor (golden file), and the engine's own rules (failures, cuts, aborts, lock-step) hold."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import gym_nemo
from gym_nemo.policies.token import Generation
from gym_nemo.rollout.engine import EpisodeTrace, VectorDriver, play, play_lockstep, policy_tokens, replay
from tests.engine_cases import CASES, GOLDEN, run_case, unversioned


@pytest.mark.parametrize("case", list(CASES))
def test_records_are_what_they_were_before_the_engine(case: str, tiny_model_dir, policy) -> None:
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))[case]
    assert unversioned(run_case(case, tiny_model_dir, policy)) == unversioned(golden)


class Exploding(gym.Wrapper):
    """Raises from reset or step on demand: an env failure, not the policy's."""

    def __init__(self, env: gym.Env, *, on: str) -> None:
        super().__init__(env)
        self.on = on

    def reset(self, **kwargs):
        if self.on == "reset":
            raise RuntimeError("sandbox gone")
        return self.env.reset(**kwargs)

    def step(self, action):
        if self.on == "step":
            raise RuntimeError("sandbox gone")
        return self.env.step(action)


@pytest.mark.parametrize("on", ["reset", "step"])
def test_env_failures_are_infra_errors_with_the_task_known(on: str) -> None:
    env = Exploding(gym.make("nemo/TargetChar-v0"), on=on)
    trace = EpisodeTrace("nemo/TargetChar-v0", "echo", task_id="target-char/o")
    record = play(env, lambda t: "ooo", trace, options={"task_id": "target-char/o"})
    assert record.infra_error == f"env {on} failed: RuntimeError: sandbox gone"
    assert record.truncated and not record.terminated and trace.env_failed and record.reward == 0.0
    assert record.task_id == "target-char/o"
    if on == "step":  # the reset went through: the row and versions are the env's
        assert record.task_row and record.versions and len(record.messages) == 2
    env.close()


def test_a_failed_policy_call_is_an_infra_error_and_a_stop_propagates() -> None:
    env = gym.make("nemo/TargetChar-v0", max_attempts=3)

    def flaky(trace: EpisodeTrace) -> str:
        if trace.turns == 1:
            raise ConnectionError("server down")
        return "b"

    record = play(env, flaky, EpisodeTrace("nemo/TargetChar-v0"), options={"task_id": "target-char/a"})
    assert record.infra_error == "policy call failed: ConnectionError: server down"
    assert record.num_turns == 1 and record.step_rewards == [0.0] and record.truncated

    class Stop(BaseException):
        pass

    def stop(_: EpisodeTrace) -> str:
        raise Stop

    with pytest.raises(Stop):
        play(env, stop, EpisodeTrace("nemo/TargetChar-v0"))
    env.close()


def test_aborted_episodes_are_dropped() -> None:
    env = gym.make("nemo/TargetChar-v0", max_attempts=3)
    record = play(env, lambda t: "x", EpisodeTrace("nemo/TargetChar-v0"), aborted=lambda: True)
    assert record is None
    env.close()


def test_context_limit_and_budget_cut_token_episodes(policy) -> None:
    from gym_nemo.wrappers import TokenEnv

    env = TokenEnv(gym.make("nemo/TargetChar-v0", max_attempts=3), policy.tokenizer)
    wrong = Generation.from_server([*policy.tokenizer.encode("zz"), policy.tokenizer.eos_token_id], None, [])
    trace = EpisodeTrace("nemo/TargetChar-v0")
    record = play(env, lambda t: wrong, trace, context_limit=0)
    assert trace.cut == "context_limit" and record.num_turns == 0 and record.truncated and not record.infra_error
    assert record.prompt_ids and record.completion_ids == []
    trace = EpisodeTrace("nemo/TargetChar-v0")
    record = play(env, lambda t: wrong, trace, max_response_tokens=1)
    assert trace.cut == "budget" and record.num_turns == 1 and record.finish_reasons == ["length"]
    stream = policy_tokens(record)
    assert stream.mask == [1] * len(wrong.token_ids) and stream.logprobs == [0.0] * len(wrong.token_ids)
    assert len(record.completion_ids) > len(stream.ids)  # the env's reply is in the record, not in the stream
    env.close()


def test_lockstep_batches_every_running_episode_per_turn() -> None:
    envs = [gym.make("nemo/TargetChar-v0", max_attempts=3) for _ in range(3)]
    batches = []

    def generate(traces: list[EpisodeTrace]) -> list[str]:
        batches.append(len(traces))
        letters = [t.task_id[-1] for t in traces]  # a is right at once; e and o on their second try
        return [x * 4 if x == "a" or t.turns == 1 else "?" for x, t in zip(letters, traces, strict=True)]

    letters = ["a", "e", "o"]
    traces = [EpisodeTrace("nemo/TargetChar-v0", task_id=f"target-char/{x}") for x in letters]
    records = play_lockstep(envs, generate, traces, [{"options": {"task_id": t.task_id}} for t in traces])
    assert batches == [3, 2]  # task a ends on turn 1; e and o get feedback and a second turn together
    assert [r.task_id for r in records] == [f"target-char/{x}" for x in letters]
    assert [r.num_turns for r in records] == [1, 2, 2] and [r.reward for r in records] == [1.0, 1.0, 1.0]
    for env in envs:
        env.close()


def test_vector_driver_records_env_endings_before_engine_cuts(policy) -> None:
    import functools

    from gym_nemo.wrappers import TokenEnv

    tok = policy.tokenizer
    wrappers = [functools.partial(TokenEnv, tokenizer=tok)]
    envs = gym_nemo.make_vec("nemo/TargetChar-v0", 2, "sync", wrappers=wrappers, max_attempts=2)
    driver = VectorDriver(envs, idle_action=np.zeros(0, dtype=np.int64))
    driver.new_wave([0, 1])
    assert driver.start(0, EpisodeTrace("e", group=0), context_limit=len(driver.observations[0]) + 1) is None
    assert driver.start(1, EpisodeTrace("e", group=1)) is None

    def answer(text: str) -> Generation:
        return Generation.from_server([*tok.encode(text), tok.eos_token_id], None, [tok.eos_token_id])

    letter = driver.info(1)["task_id"][-1]
    ended = driver.answer({0: answer("?"), 1: answer(letter * 6)})
    assert [slot for slot, _ in ended] == [1, 0]  # slot 1 ended by the env, then slot 0 cut by its context limit
    done, cut = dict(ended)[1], dict(ended)[0]
    assert done.terminated and done.reward == 1.0
    assert not cut.terminated and cut.truncated and cut.num_turns == 1 and cut.task_row and cut.versions
    assert driver.waiting == []
    envs.close()


def test_replay_scores_a_stored_transcript_again() -> None:
    env = gym.make("nemo/TargetChar-v0", max_attempts=3)
    answers = iter(["xx", "ooo"])
    played = play(
        env, lambda t: next(answers), EpisodeTrace("nemo/TargetChar-v0"), options={"task_id": "target-char/o"}
    )
    row = played.to_row()
    again = replay(env, row)
    assert (
        again.step_rewards == played.step_rewards == [0.0, 1.0] and again.terminated and again.task_id == row["task_id"]
    )
    first = next(i for i, m in enumerate(row["messages"]) if m["role"] == "assistant")
    row["messages"] = row["messages"][: first + 1]  # up to the first (wrong) answer: the transcript ends early
    cut = replay(env, row)
    assert cut.step_rewards == [0.0] and cut.truncated and not cut.terminated and cut.infra_error is None
    env.close()
