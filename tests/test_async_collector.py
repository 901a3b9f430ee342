"""The asynchronous collector: well-formed records, continuous batching, stragglers, deadlines, env failures."""

from __future__ import annotations

import copy
import json
import os
import time
from collections import Counter
from collections.abc import Sequence

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import gymnasium as gym  # noqa: E402

from gym_nemo.envs.code_exec import CodeExecEnv  # noqa: E402
from gym_nemo.policies import Generation, HFPolicy, SamplingParams  # noqa: E402
from gym_nemo.rollout import collect_token_rollouts_async  # noqa: E402
from gym_nemo.wrappers import TokenEnv  # noqa: E402
from tests.test_token_rollout import check_alignment  # noqa: E402

ENV = "nemo/CodeExec-v0"


class BatchLog:
    """Wraps a token policy and logs the size of every ``generate`` batch."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.sizes = inner, inner.name, []

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Generation]:
        self.sizes.append(len(prompts))
        return self.inner.generate(prompts, sampling)


class AnswerPolicy:
    """Instantly answers every prompt with the same final code block (one verified turn per episode)."""

    name = "answer"

    def __init__(self, tokenizer) -> None:
        self.ids = [*tokenizer.encode("```python\ndef f():\n    return 42\n```"), tokenizer.eos_token_id]
        self.sizes: list[int] = []

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Generation]:
        self.sizes.append(len(prompts))
        return [Generation(list(self.ids), [-1.0] * len(self.ids), "stop") for _ in prompts]


class MisbehavingCodeExec(CodeExecEnv):
    """CodeExec whose step sleeps ``sleep_s`` in episodes reset with ``slow_seed``, and raises with ``bad_seed``."""

    def __init__(self, *, slow_seed: int | None, sleep_s: float, bad_seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.slow_seed, self.sleep_s, self.bad_seed = slow_seed, sleep_s, bad_seed
        self._seed: int | None = None

    def reset(self, *, seed=None, options=None):
        self._seed = seed
        return super().reset(seed=seed, options=options)

    def step(self, action):
        if self._seed == self.bad_seed:
            raise RuntimeError("sandbox connection lost")
        if self._seed == self.slow_seed:
            time.sleep(self.sleep_s)
        return super().step(action)


def test_records_are_complete_and_batched_with_the_tiny_model(policy: HFPolicy, tools: list[dict], tmp_path) -> None:
    out = tmp_path / "async.jsonl"
    logged = BatchLog(policy)
    records, metrics = collect_token_rollouts_async(
        lambda: TokenEnv(gym.make(ENV, timeout_s=5, max_attempts=2), copy.deepcopy(policy.tokenizer)),
        logged,
        8,
        env_id=ENV,
        group_size=2,
        sampling=SamplingParams(max_tokens=12, seed=0),
        out=out,
        max_in_flight=4,
        batch_wait_s=0.02,
        progress=False,
    )
    assert metrics.episodes == len(records) == 8 and metrics.groups == 4 and metrics.infra_error_rate == 0.0
    assert metrics.mean_turns == 2.0 and metrics.policy_s > 0 and metrics.tokens_per_s > 0
    assert Counter(r.group for r in records) == {g: 2 for g in range(4)}
    for group in range(4):  # a group is G rollouts of the same task
        members = [r for r in records if r.group == group]
        assert members[0].task_id == members[1].task_id and members[0].prompt_ids == members[1].prompt_ids
    assert len({tuple(r.completion_ids) for r in records}) == 8
    # continuous batching: one request per turn, and pending requests of several episodes share a call
    assert sum(logged.sizes) == 16 and max(logged.sizes) > 1 and len(logged.sizes) < 16
    for record in records:
        assert record.terminated and record.step_rewards == [0.0, 0.0] and record.infra_error is None
        assert record.versions["env"] == ENV and record.task_row["verifier_metadata"]["task_id"] == record.task_id
        check_alignment(record, policy.tokenizer, tools)
        ids = record.prompt_ids + record.completion_ids
        with torch.no_grad():  # each turn was generated from exactly the stored stream
            logits = policy.model(input_ids=torch.tensor([ids])).logits[0].float()
        forced = torch.log_softmax(logits[:-1], dim=-1).gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1)
        start = len(record.prompt_ids)
        for k, (lp, m) in enumerate(zip(record.completion_logprobs, record.completion_mask, strict=True)):
            if m:
                assert abs(lp - float(forced[start + k - 1])) < 1e-4
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["completion_ids"] for r in rows] == [r.completion_ids for r in records]


def test_a_slow_env_does_not_stall_the_others(policy: HFPolicy) -> None:
    answer = AnswerPolicy(policy.tokenizer)
    finished: list[tuple[float, int]] = []
    sleep_s = 2.0

    def make():
        env = MisbehavingCodeExec(slow_seed=0, sleep_s=sleep_s, timeout_s=5)
        return TokenEnv(env, copy.deepcopy(policy.tokenizer))

    start = time.monotonic()
    records, metrics = collect_token_rollouts_async(
        make,
        answer,
        200,
        env_id=ENV,
        max_in_flight=4,
        progress=False,
        on_record=lambda r: finished.append((time.monotonic() - start, r.group)),
    )
    assert len(records) == 200 and metrics.infra_error_rate == 0.0
    slow = next(r for r in records if r.group == 0)
    assert slow.duration_s >= sleep_s and slow.terminated and slow.infra_error is None
    slow_done = next(t for t, g in finished if g == 0)
    behind = sum(1 for t, g in finished if g != 0 and t < slow_done)
    print(f"\n{behind} episodes finished while the slow one ({slow.duration_s:.2f} s) was stuck")
    # Lock-step would finish at most the other 3 of its wave; 3 free slots of ~10-50 ms episodes do far more.
    assert behind >= 20
    assert all(r.terminated and len(r.completion_ids) > 0 for r in records)


def test_deadline_and_env_failures_are_recorded_as_infra_errors(policy: HFPolicy, tools: list[dict]) -> None:
    answer = AnswerPolicy(policy.tokenizer)

    def make():
        env = MisbehavingCodeExec(slow_seed=0, sleep_s=6.0, bad_seed=1, timeout_s=5)
        return TokenEnv(env, copy.deepcopy(policy.tokenizer))

    start = time.monotonic()
    records, metrics = collect_token_rollouts_async(
        make, answer, 12, env_id=ENV, max_in_flight=3, episode_timeout_s=1.0, progress=False
    )
    took = time.monotonic() - start
    assert len(records) == 12 and sorted(r.group for r in records) == list(range(12))
    assert took < 5.0  # the run did not wait for the stuck step (6 s)
    stuck = next(r for r in records if r.group == 0)
    assert stuck.truncated and not stuck.terminated and "deadline" in stuck.infra_error
    assert 1.0 <= stuck.duration_s < 2.0 and stuck.num_turns == 0 and stuck.completion_ids == []
    assert stuck.messages[-1]["role"] == "user" and stuck.versions["verifier"] and stuck.task_row
    rendered = policy.tokenizer.apply_chat_template(
        stuck.messages, tools=tools, tokenize=False, add_generation_prompt=True
    )
    assert policy.tokenizer.decode(stuck.prompt_ids, skip_special_tokens=False) == rendered
    failed = next(r for r in records if r.group == 1)
    assert failed.truncated and "env step failed: RuntimeError: sandbox connection lost" in failed.infra_error
    others = [r for r in records if r.group > 1]
    assert all(r.terminated and r.infra_error is None and r.num_turns == 1 for r in others)
    assert metrics.infra_error_rate == pytest.approx(2 / 12)


def test_resume_completes_the_groups_of_a_torn_file(policy: HFPolicy, tmp_path) -> None:
    out = tmp_path / "resume.jsonl"
    answer = AnswerPolicy(policy.tokenizer)

    def run(n: int, **kw):
        make = lambda: TokenEnv(gym.make(ENV, timeout_s=5), copy.deepcopy(policy.tokenizer))  # noqa: E731
        return collect_token_rollouts_async(make, answer, n, env_id=ENV, group_size=2, out=out, progress=False, **kw)

    run(4)
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2], encoding="utf-8")  # a kill mid-write
    new, metrics = run(8, resume=True)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert metrics.episodes == len(new) == 5 and len(rows) == 8
    assert rows[:3] == [json.loads(line) for line in lines[:3]]
    assert Counter(r["group"] for r in rows) == {g: 2 for g in range(4)}
    assert all(len({r["task_id"] for r in rows if r["group"] == g}) == 1 for g in range(4))
    assert run(8, resume=True)[0] == []
