"""The verl agent loop: its episode core in this venv, and ``NemoAgentLoop`` run through verl's own agent-loop code
in the verl venv (verl 0.9.1 pins transformers<5.11; ``bash scripts/setup_verl.sh`` makes that venv)."""

import asyncio
import itertools
import json
import os
import subprocess
from pathlib import Path

import gymnasium as gym
import pytest

from gym_nemo.policies.token import Generation, SamplingParams
from gym_nemo.rollout.engine import EpisodeTrace, aplay, policy_tokens
from gym_nemo.wrappers import TokenEnv


def test_episode_with_a_real_generate_is_token_exact(policy) -> None:
    tokenizer = policy.tokenizer
    env = TokenEnv(gym.make("nemo/TargetChar-v0", max_attempts=2), tokenizer)
    calls = []

    async def generate(trace: EpisodeTrace) -> Generation:
        calls.append(list(trace.context))
        sampling = SamplingParams(max_tokens=6, seed=len(calls))
        [gen] = await asyncio.to_thread(policy.generate, [trace.context], sampling)
        return gen

    trace = EpisodeTrace("nemo/TargetChar-v0", policy.name)
    record = asyncio.run(aplay(env, generate, trace, options={"task_id": "target-char/a"}, max_response_tokens=200))
    assert record.terminated and record.num_turns == 2 == len(calls)  # 6-token cut answers are wrong: 2nd turn
    assert record.reward == pytest.approx(env.unwrapped._return)
    stream = policy_tokens(record)
    ids = record.prompt_ids + stream.ids
    assert ids == env.get_wrapper_attr("_ids")[: len(ids)]  # TokenEnv's own stream, trailing env tokens cut
    assert record.prompt_ids + record.completion_ids == env.get_wrapper_attr("_ids")  # the record keeps them
    assert calls[1] == ids[: len(calls[1])]  # the second turn saw exactly the first turn's stream
    assert stream.mask[-1] == 1
    assert all(lp < 0 for lp, m in zip(stream.logprobs, stream.mask, strict=True) if m)
    assert all(lp == 0 for lp, m in zip(stream.logprobs, stream.mask, strict=True) if not m)
    env.close()


def test_episode_budget_ends_a_long_episode(tiny_model_dir) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    env = TokenEnv(gym.make("nemo/CodeExec-v0", timeout_s=5), tokenizer)
    call = {"name": "execute_python", "arguments": {"code": "print(6 * 7)"}}
    tool_call = [*tokenizer.encode(f"<tool_call>\n{json.dumps(call)}\n</tool_call>"), tokenizer.eos_token_id]

    async def generate(trace: EpisodeTrace) -> Generation:
        return Generation.from_server(tool_call, None, [tokenizer.eos_token_id])

    record = asyncio.run(aplay(env, generate, EpisodeTrace("nemo/CodeExec-v0"), max_response_tokens=150))
    assert not record.terminated and record.truncated and record.infra_error is None
    assert record.finish_reasons == ["stop"] * record.num_turns
    per_turn = len(record.completion_ids) // record.num_turns
    assert len(record.completion_ids) >= 150 > len(record.completion_ids) - per_turn  # stopped once over budget
    env_ids = [t for t, m in zip(record.completion_ids, record.completion_mask, strict=True) if not m]
    assert "42" in tokenizer.decode(env_ids)
    env.close()


def test_verl_is_not_importable_here() -> None:
    """verl lives in its own venv (below); if it becomes installable next to this project's pins, this fails and the
    verl run can move into this venv."""
    with pytest.raises(ImportError):
        import gym_nemo.integrations.verl  # noqa: F401


ROOT = Path(__file__).resolve().parents[1]


def verl_python() -> Path:
    venv = Path(os.environ.get("GYM_NEMO_VERL_VENV", ROOT / ".venv-verl"))
    if not (venv / ".gym_nemo_verl_install").exists():  # written by setup_verl.sh once its install succeeded
        pytest.skip(f"VERL RUN NOT DONE: no verl venv at {venv}; `bash scripts/setup_verl.sh` makes it (test.sh does)")
    return venv / "bin" / "python"


def test_nemo_agent_loop_through_verls_agent_loop_worker(tiny_model_dir, tmp_path) -> None:
    """verl's AgentLoopWorker (Hydra config, agent-loop registry, LLMServerClient and load balancer on Ray, padding,
    rm_scores) and its GRPO advantages, around NemoAgentLoop, with a CPU server of the tiny model in place of
    verl's vLLM server (gym_nemo/testing/verl_harness.py says what runs and what cannot). Each sample is replayed
    here: the env tokens verl returned are the env's own, the rewards are the env's, and the rollout logprobs are
    the model's teacher-forced logprobs: nothing shifted in verl's padding and masking."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.test_hf_policy import teacher_forced

    out = tmp_path / "verl_result.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", RAY_ADDRESS="")
    command = [str(verl_python()), "-m", "gym_nemo.testing.verl_harness", "--model", str(tiny_model_dir)]
    done = subprocess.run([*command, "--out", str(out)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(out.read_text())
    shapes = result["tensor_shapes"]
    assert shapes["responses"] == shapes["response_mask"] == shapes["rm_scores"] == [4, result["response_length"]]
    assert {"prompts", "input_ids", "attention_mask", "position_ids", "rollout_log_probs", "advantages"} <= set(shapes)

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    turns = 0
    for sample in result["samples"]:
        assert sample["infra_error"] is None
        replay = TokenEnv(gym.make("nemo/TargetChar-v0", max_attempts=2), tokenizer)
        obs, _ = replay.reset(options={"task_id": sample["task_id"]})
        assert list(obs) == sample["prompt_ids"]
        context, rewards = list(sample["prompt_ids"]), []
        runs = [
            (mask, [t for t, _ in group])
            for mask, group in itertools.groupby(
                zip(sample["response_ids"], sample["response_mask"], strict=True), key=lambda x: x[1]
            )
        ]
        position = 0
        for i, (mask, ids) in enumerate(runs):
            logprobs = sample["rollout_log_probs"][position : position + len(ids)]
            position += len(ids)
            if mask == 0:
                continue
            assert logprobs == pytest.approx(teacher_forced(model, context, ids), abs=1e-4)
            delta, reward, *_ = replay.step(ids)
            rewards.append(reward)
            if i + 1 < len(runs):
                assert list(delta) == runs[i + 1][1]  # the env tokens verl holds are the env's own
            context += ids + list(delta)
        replay.close()
        turns += len(rewards)
        assert rewards == pytest.approx(sample["turn_scores"])
        assert sample["reward_score"] == pytest.approx(sum(rewards), abs=1e-6)
    assert turns > len(result["samples"]) and result["server_calls"] == turns  # multi-turn, every call through verl
    advantages = [s["advantage"] for s in result["samples"]]
    assert advantages[0] == pytest.approx(-advantages[1], abs=1e-4) and advantages[2] == pytest.approx(
        -advantages[3], abs=1e-4
    )
