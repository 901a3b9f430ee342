"""The episode core of the verl agent loop (verl itself cannot be installed here: see gym_nemo/integrations/verl.py)."""

import asyncio
import json

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
    """If verl becomes installable next to this project's pins, the adapter must get a real test: this fails then."""
    with pytest.raises(ImportError):
        import gym_nemo.integrations.verl  # noqa: F401
