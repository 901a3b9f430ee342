"""The episode core of the verl agent loop (verl itself cannot be installed here: see gym_nemo/integrations/verl.py)."""

import asyncio
import json

import gymnasium as gym
import pytest

from gym_nemo.integrations.episode import play_token_episode
from gym_nemo.policies.token import SamplingParams
from gym_nemo.wrappers import TokenEnv


def test_episode_with_a_real_generate_is_token_exact(policy) -> None:
    tokenizer = policy.tokenizer
    env = TokenEnv(gym.make("nemo/TargetChar-v0", max_attempts=2), tokenizer)
    calls = []

    async def generate(context):
        calls.append(list(context))
        [gen] = await asyncio.to_thread(policy.generate, [context], SamplingParams(max_tokens=6, seed=len(calls)))
        return gen.token_ids, gen.logprobs

    episode = asyncio.run(play_token_episode(env, generate, task_id="target-char/a", max_response_tokens=200))
    assert episode.done and episode.turns == 2 == len(calls)  # 6-token cut answers are wrong: feedback, 2nd turn
    assert episode.reward == pytest.approx(env.unwrapped._return)
    ids = episode.prompt_ids + episode.response_ids
    assert ids == env.get_wrapper_attr("_ids")[: len(ids)]  # TokenEnv's own stream, trailing env tokens cut
    assert calls[1] == ids[: len(calls[1])]  # the second turn saw exactly the first turn's stream
    assert episode.response_mask[-1] == 1
    assert all(lp < 0 for lp, m in zip(episode.response_logprobs, episode.response_mask, strict=True) if m)
    assert all(lp == 0 for lp, m in zip(episode.response_logprobs, episode.response_mask, strict=True) if not m)
    env.close()


def test_episode_budget_ends_a_long_episode(tiny_model_dir) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    env = TokenEnv(gym.make("nemo/CodeExec-v0", timeout_s=5), tokenizer)
    call = {"name": "execute_python", "arguments": {"code": "print(6 * 7)"}}
    tool_call = [*tokenizer.encode(f"<tool_call>\n{json.dumps(call)}\n</tool_call>"), tokenizer.eos_token_id]

    async def generate(context):
        return tool_call, None

    episode = asyncio.run(play_token_episode(env, generate, max_response_tokens=150))
    assert not episode.done and episode.infra_error is None
    per_turn = len(episode.response_ids) // episode.turns
    assert len(episode.response_ids) >= 150 > len(episode.response_ids) - per_turn  # stopped once over budget
    env_ids = [t for t, m in zip(episode.response_ids, episode.response_mask, strict=True) if not m]
    assert "42" in tokenizer.decode(env_ids)
    env.close()


def test_verl_is_not_importable_here() -> None:
    """If verl becomes installable next to this project's pins, the adapter must get a real test: this fails then."""
    with pytest.raises(ImportError):
        import gym_nemo.integrations.verl  # noqa: F401
