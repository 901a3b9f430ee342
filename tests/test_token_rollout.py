"""Token-level rollouts on nemo/CodeExec-v0 with the tiny model: records, groups, mask/ids/logprob alignment."""

from __future__ import annotations

import functools
import json
import os
from collections import Counter
from collections.abc import Sequence

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import gymnasium as gym  # noqa: E402

import gym_nemo  # noqa: E402
from gym_nemo.cli import main  # noqa: E402
from gym_nemo.policies import Generation, HFPolicy, SamplingParams  # noqa: E402
from gym_nemo.rollout import EpisodeRecord, collect_token_rollouts, token_rollout_metrics  # noqa: E402
from gym_nemo.wrappers import TokenEnv  # noqa: E402

ENV = "nemo/CodeExec-v0"


def make_envs(tokenizer, num_envs: int, mode: str = "sync", **env_kwargs):
    wrappers = [functools.partial(TokenEnv, tokenizer=tokenizer)]
    return gym_nemo.make_vec(ENV, num_envs, mode, wrappers=wrappers, timeout_s=5, **env_kwargs)


def check_alignment(record: EpisodeRecord, tokenizer, tools: list[dict]) -> None:
    """The stored stream is the template applied to the stored chat; masks and logprobs line up with it."""
    ids = record.prompt_ids + record.completion_ids
    n = len(record.completion_ids)
    assert len(record.completion_mask) == len(record.completion_logprobs) == n
    assert set(record.completion_mask) <= {0, 1} and record.completion_mask[0] == 1
    assert all(lp == 0.0 for lp, m in zip(record.completion_logprobs, record.completion_mask, strict=True) if m == 0)
    assert all(lp < 0.0 for lp, m in zip(record.completion_logprobs, record.completion_mask, strict=True) if m == 1)
    final = tokenizer.apply_chat_template(record.messages, tools=tools, tokenize=False)
    assert tokenizer.decode(ids, skip_special_tokens=False) == final
    # one run of policy tokens per assistant turn, each decoding to that turn's message
    runs, current = [], []
    for token, m in zip(record.completion_ids, record.completion_mask, strict=True):
        if m:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    assistant = [m["content"] for m in record.messages if m["role"] == "assistant"]
    assert len(runs) == len(assistant) == record.num_turns == len(record.finish_reasons)
    eot = tokenizer.eos_token_id
    for run, content, finish in zip(runs, assistant, record.finish_reasons, strict=True):
        assert tokenizer.decode(run[:-1] if finish == "stop" else run, skip_special_tokens=False) == content
        assert (run[-1] == eot) == (finish == "stop")


def test_hf_rollouts_groups_and_alignment(policy: HFPolicy, tools: list[dict], tmp_path) -> None:
    out = tmp_path / "rollouts.jsonl"
    envs = make_envs(policy.tokenizer, 4, max_attempts=2)  # a wrong answer gets feedback: 2-turn episodes
    try:
        records, summary = collect_token_rollouts(
            envs,
            policy,
            8,
            env_id=ENV,
            group_size=2,
            sampling=SamplingParams(max_tokens=12, seed=0),
            out=out,
            progress=False,
        )
    finally:
        envs.close()
    assert summary.episodes == len(records) == 8 and summary.groups == 4 and summary.mean_reward == 0.0
    assert summary.mixed_group_rate == 0.0 and summary.mean_turns == 2.0 and summary.infra_error_rate == 0.0
    assert summary.policy_tokens == sum(sum(r.completion_mask) for r in records) <= 8 * 2 * 12
    assert summary.tokens_per_s > 0 and 0 < summary.env_time_share < 1 and summary.policy_s > 0
    assert Counter(r.group for r in records) == {g: 2 for g in range(4)}
    for group in range(4):  # a group is G rollouts of the same task, sampled independently
        members = [r for r in records if r.group == group]
        assert members[0].task_id == members[1].task_id and members[0].prompt_ids == members[1].prompt_ids
    assert len({tuple(r.completion_ids) for r in records}) == 8
    for record in records:
        assert record.reward == 0.0 and record.step_rewards == [0.0, 0.0] and record.infra_error is None
        check_alignment(record, policy.tokenizer, tools)
        # The policy generated each turn from exactly the stored stream: its logprobs are the model's
        # teacher-forced logprobs over prompt + completion.
        ids = record.prompt_ids + record.completion_ids
        with torch.no_grad():
            logits = policy.model(input_ids=torch.tensor([ids])).logits[0].float()
        forced = torch.log_softmax(logits[:-1], dim=-1).gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1)
        start = len(record.prompt_ids)
        for k, (lp, m) in enumerate(zip(record.completion_logprobs, record.completion_mask, strict=True)):
            if m:
                assert abs(lp - float(forced[start + k - 1])) < 1e-4
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 8
    for row, record in zip(rows, records, strict=True):
        for key in ("prompt_ids", "completion_ids", "completion_mask", "group", "finish_reasons", "step_rewards"):
            assert row[key] == getattr(record, key)
        assert row["completion_logprobs"] == pytest.approx(record.completion_logprobs)
        assert row["verdict"]["passed"] is False and "verifier_metadata" in row


class ScriptedToolPolicy:
    """Calls execute_python on the first turn (truncated, no end-of-turn token, for odd groups), then answers."""

    name = "scripted"

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.sent: list[list[int]] = []

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Generation]:
        tok = self.tokenizer
        out = []
        for k, prompt in enumerate(prompts):
            first = tok.decode(list(prompt)).count("<|im_start|>assistant") == 1
            if first:
                call = {"name": "execute_python", "arguments": {"code": "print('Grüße 🚀', 6 * 7)"}}
                ids = tok.encode(f"Let me check.\n<tool_call>\n{json.dumps(call)}\n</tool_call>")
                ids = ids if k % 2 else [*ids, tok.eos_token_id]
            else:
                ids = [*tok.encode("```python\ndef f():\n    return 42\n```"), tok.eos_token_id]
            self.sent.append(ids)
            stop = ids[-1] == tok.eos_token_id
            out.append(Generation(ids, [-1.0] * len(ids), "stop" if stop else "length", tok.decode(ids)))
        return out


def test_multi_turn_tool_calls_through_the_sandbox(policy: HFPolicy, tools: list[dict]) -> None:
    scripted = ScriptedToolPolicy(policy.tokenizer)
    envs = make_envs(policy.tokenizer, 4, mode="async")
    try:
        records, metrics = collect_token_rollouts(envs, scripted, 4, env_id=ENV, group_size=2, progress=False)
    finally:
        envs.close()
    assert len(records) == 4
    for record in records:
        assert record.num_turns == 2 and record.terminated
        tool_messages = [m for m in record.messages if m["role"] == "tool"]
        assert len(tool_messages) == 1 and "Grüße 🚀 42" in tool_messages[0]["content"]
        check_alignment(record, policy.tokenizer, tools)
        policy_ids = [t for t, m in zip(record.completion_ids, record.completion_mask, strict=True) if m]
        assert any(policy_ids == a + b for a in scripted.sent for b in scripted.sent)
    assert sorted(tuple(r.finish_reasons) for r in records) == [("length", "stop")] * 2 + [("stop", "stop")] * 2
    assert metrics.generation_truncation_rate == 2 / 8 and metrics.tool_error_rate == 0.0
    assert metrics.mean_turns == 2.0 and metrics.truncation_rate == 0.0


def _rec(group: int, reward: float, **kw) -> EpisodeRecord:
    return EpisodeRecord(
        env_id=ENV, task_id=f"t{group}", task_row={}, messages=kw.pop("messages", []), reward=reward, group=group, **kw
    )


def test_token_rollout_metrics_by_hand() -> None:
    tool = {"role": "tool", "name": "execute_python", "content": "ok"}
    error = {"role": "tool", "name": "error", "content": "[error] unknown tool"}
    records = [
        _rec(0, 1.0, verdict={"passed": True}, num_turns=2, finish_reasons=["stop", "length"], messages=[tool]),
        _rec(0, 0.0, num_turns=1, finish_reasons=["length"], messages=[error, tool, tool]),
        _rec(1, 0.0, num_turns=3, truncated=True, finish_reasons=["stop"] * 3),
        _rec(
            1,
            0.0,
            num_turns=1,
            finish_reasons=["stop"],
            prompt_ids=[1, 2],
            completion_ids=[3, 4, 5],
            completion_mask=[1, 1, 0],
        ),
        _rec(2, 0.0, num_turns=1, infra_error="sandbox down", finish_reasons=["stop"]),
        _rec(2, 1.0, num_turns=1, verdict={"passed": True}, finish_reasons=["stop"]),
    ]
    m = token_rollout_metrics(records, duration_s=2.0, policy_s=1.0, env_s=0.5)
    assert (m.episodes, m.groups) == (6, 3)
    assert m.mean_reward == pytest.approx(2 / 5) and m.pass_rate == pytest.approx(2 / 5)
    assert m.mixed_group_rate == pytest.approx(1 / 3)  # group 0 differs; 1 ties; 2 has one scored episode
    assert m.mean_turns == pytest.approx(9 / 6) and m.truncation_rate == pytest.approx(1 / 6)
    assert m.generation_truncation_rate == pytest.approx(2 / 9) and m.infra_error_rate == pytest.approx(1 / 6)
    assert m.tool_error_rate == pytest.approx(1 / 4)
    assert (m.policy_tokens, m.env_tokens) == (2, 3) and m.tokens_per_s == 1.0 and m.env_time_share == 0.25
    assert "mixed groups" in m.format() and token_rollout_metrics([]).episodes == 0


def test_cli_rollout_with_the_hf_policy(tiny_model_dir, tmp_path, capsys) -> None:
    out = tmp_path / "cli.jsonl"
    argv = ["rollout", ENV, "--policy", "hf", "--model", str(tiny_model_dir), "--num-envs", "2"]
    argv += ["--num-episodes", "4", "--group-size", "2", "--max-tokens", "8", "--quiet", "--out", str(out)]
    assert main([*argv, "--env-kwargs", '{"timeout_s": 5}']) == 0
    assert "wrote 4 episodes" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and sorted(r["group"] for r in rows) == [0, 0, 1, 1]
    for row in rows:
        assert row["policy"].startswith("hf:") and row["reward"] == 0.0
        assert len(row["completion_ids"]) == len(row["completion_mask"]) == len(row["completion_logprobs"])
        assert sum(row["completion_mask"]) <= 8 * row["num_turns"]
    assert main(["rollout", ENV, "--policy", "hf", "--out", str(out)]) == 2  # no --model
    assert main([*argv, "--group-size", "3"]) == 2  # 2 envs and 4 episodes in groups of 3


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_resume_cuts_a_torn_line_and_completes_the_groups(policy: HFPolicy, tmp_path) -> None:
    out = tmp_path / "resume.jsonl"
    envs = make_envs(policy.tokenizer, 4)
    try:
        run = functools.partial(collect_token_rollouts, envs, ScriptedToolPolicy(policy.tokenizer), env_id=ENV)
        run(4, group_size=2, out=out, progress=False)
        first = out.read_text(encoding="utf-8").splitlines(keepends=True)
        # a killed run: three whole lines (groups 0, 0 and one of 1, in some order) and half of the fourth
        out.write_text("".join(first[:3]) + first[3][: len(first[3]) // 2], encoding="utf-8")
        kept = [json.loads(line) for line in first[:3]]
        new, metrics = run(8, group_size=2, out=out, resume=True, progress=False)
        assert metrics.episodes == len(new) == 5  # 1 missing from the torn group + groups 2 and 3
        rows = _rows(out)
        assert rows[:3] == kept and len(rows) == 8
        assert Counter(r["group"] for r in rows) == {0: 2, 1: 2, 2: 2, 3: 2}
        for group in range(4):
            assert len({r["task_id"] for r in rows if r["group"] == group}) == 1  # resumed members play its task
        again, _ = run(8, group_size=2, out=out, resume=True, progress=False)
        assert again == [] and len(_rows(out)) == 8  # nothing left to play
    finally:
        envs.close()


def test_kill_9_then_resume_loses_and_duplicates_nothing(tiny_model_dir, tmp_path) -> None:
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "killed.jsonl"
    args = [sys.executable, "-m", "gym_nemo.cli", "rollout", ENV, "--policy", "hf", "--model", str(tiny_model_dir)]
    args += ["--num-envs", "2", "--num-episodes", "16", "--group-size", "2", "--max-tokens", "16", "--quiet"]
    args += ["--vectorization", "sync", "--out", str(out), "--env-kwargs", '{"timeout_s": 5, "max_attempts": 2}']
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 3):
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    killed = out.read_bytes()
    assert 3 <= killed.count(b"\n") < 16
    done = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = _rows(out)
    assert len(rows) == 16 and Counter(r["group"] for r in rows) == {g: 2 for g in range(8)}
    whole = killed[: killed.rfind(b"\n") + 1].decode("utf-8").splitlines()
    assert [json.loads(line) for line in whole] == rows[: len(whole)]  # what was written survives unchanged
    assert len({tuple(r["completion_ids"]) for r in rows}) == 16  # no episode written twice, no draw repeated


def test_episodes_that_outgrow_the_context_end_truncated(policy: HFPolicy, tools: list[dict]) -> None:
    task = {"task_ids": ["HumanEval/0"], "max_attempts": 3}
    env = TokenEnv(gym.make(ENV, timeout_s=5, **task), policy.tokenizer)
    prompt, _ = env.reset(seed=0)
    env.close()
    limit = len(prompt) + 12 + 5  # the first turn fits; the feedback after a wrong answer does not leave room
    envs = make_envs(policy.tokenizer, 2, **task)
    try:
        records, metrics = collect_token_rollouts(
            envs,
            policy,
            4,
            env_id=ENV,
            group_size=2,
            sampling=SamplingParams(max_tokens=12, seed=1),
            max_context_tokens=limit,
            progress=False,
        )
    finally:
        envs.close()
    assert len(records) == 4 and metrics.truncation_rate == 1.0
    for r in records:
        assert r.truncated and not r.terminated and r.num_turns == 1 and r.step_rewards == [0.0]
        ids = r.prompt_ids + r.completion_ids
        assert len(ids) + 12 > limit and r.messages[-1]["role"] == "user"  # the unanswered feedback
        rendered = policy.tokenizer.apply_chat_template(
            r.messages, tools=tools, tokenize=False, add_generation_prompt=True
        )
        assert policy.tokenizer.decode(ids, skip_special_tokens=False) == rendered
        assert r.task_row["verifier_metadata"]["task_id"] == "HumanEval/0" and r.versions["env"] == ENV
