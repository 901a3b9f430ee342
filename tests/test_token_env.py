"""TokenEnv: the token invariant over >= 1,000 random episodes for three chat-template families.

Actions are random ids from the tiny vocabulary (special tokens, partial UTF-8 included) and structured
messages (reasoning, tool calls, unicode), each ending with the end-of-turn token or not (a truncated
generation). The env is a small TextEnv with two tools and two attempts, so episodes contain tool
messages, user feedback and early stops; it runs in microseconds, so the file takes seconds.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers")

from gym_nemo.core.env import TextEnv
from gym_nemo.core.task import Task, input_messages
from gym_nemo.core.tools import Tool
from gym_nemo.core.verdict import Verdict
from gym_nemo.testing.tiny_model import CHAT_TEMPLATES, build_tokenizer
from gym_nemo.wrappers import TokenEnv

PROMPTS = ["What is 6 × 7? Answer with the number.", "Combien font six fois sept ? 🤔", "六乘以七是多少？"]


class EchoEnv(TextEnv):
    """Answer 42. Tools: ``echo`` (returns its text) and ``shout`` (upper case). Two attempts."""

    default_max_turns = 5

    @classmethod
    def bundled_rows(cls) -> Sequence[Mapping[str, Any]]:
        return [{"responses_create_params": {"input": p}, "task_id": f"t{i}"} for i, p in enumerate(PROMPTS)]

    @classmethod
    def row_to_task(cls, row: Mapping[str, Any], index: int) -> Task:
        return Task(task_id=row["task_id"], messages=tuple(input_messages(row)), row=row)

    def make_tools(self) -> Sequence[Tool]:
        schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
        return [
            Tool("echo", "Return the text.", schema, lambda text: text),
            Tool("shout", "Return the text in upper case.", schema, lambda text: text.upper()),
        ]

    def verify(self, task: Task, answer: str) -> Verdict:
        ok = "42" in answer
        return Verdict(reward=float(ok), passed=ok, reason="correct" if ok else "the answer is not 42")


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, Any]:
    return {name: build_tokenizer(name) for name in CHAT_TEMPLATES}


UNICODE = ["é", "ß", "Ω", "жизнь", "日本語", "🙂", "👩‍💻", "\u200b", "\U0001f680", "ﬁ", "𝔘"]


def structured_text(rng: np.random.Generator) -> str:
    """A plausible assistant message: optional reasoning, then tool calls or a final answer."""
    parts = []
    if rng.random() < 0.5:
        parts.append(f"<think>\nLet me think {rng.choice(UNICODE)} about it.\n</think>\n")
    kind = rng.integers(4)
    if kind == 0:
        for _ in range(int(rng.integers(1, 3))):
            call = {"name": str(rng.choice(["echo", "shout", "nope"])), "arguments": {"text": str(rng.choice(UNICODE))}}
            parts.append(f"<tool_call>\n{json.dumps(call, ensure_ascii=bool(rng.integers(2)))}\n</tool_call>\n")
    elif kind == 1:
        parts.append("<tool_call>\n{not json\n</tool_call>")
    elif kind == 2:
        parts.append(f"The answer is {rng.choice(['42', '41', '４２'])} {rng.choice(UNICODE)}")
    else:
        parts.append(f"Hmm {rng.choice(UNICODE)}")
    return "".join(parts)


def random_action(rng: np.random.Generator, tok: Any, eot: list[int]) -> tuple[list[int], bool]:
    """Action ids and whether they are the canonical tokenization of a structured message."""
    ended = rng.random() < 0.75
    if rng.random() < 0.5:
        ids = [int(i) for i in rng.integers(0, len(tok), size=int(rng.integers(0, 40)))]
        canonical = False
    else:
        ids = tok.encode(structured_text(rng), add_special_tokens=False)
        canonical = True
    return (ids + eot if ended else ids), canonical and ended


def run_episode(env: TokenEnv, rng: np.random.Generator, seed: int) -> dict[str, Any]:
    tok = env.tokenizer
    obs, info = env.reset(seed=seed)
    assert obs.dtype == np.int64 and obs.ndim == 1 and env.observation_space.contains(obs)
    stream, mask, canonical = [int(i) for i in obs], [0] * len(obs), True
    decoded_prompts = [tok.decode(stream, skip_special_tokens=False)]
    done = False
    while not done:
        ids, is_canonical = random_action(rng, tok, env.end_of_turn_ids)
        canonical &= is_canonical
        obs, _, terminated, truncated, info = env.step(np.asarray(ids, dtype=np.int64))
        done = terminated or truncated
        assert env.observation_space.contains(obs)
        # The text env got exactly the decoded action (minus a generated end-of-turn token) as the assistant turn.
        body = ids[: -len(env.end_of_turn_ids)] if not info["generation_truncated"] else ids
        assert info["generation_truncated"] == (ids[-len(env.end_of_turn_ids) :] != env.end_of_turn_ids or not ids)
        assistant = [m for m in info["messages"] if m["role"] == "assistant"][-1]
        assert assistant["content"] == info["action_text"] == tok.decode(body, skip_special_tokens=False)
        if info["generation_truncated"]:  # the env's delta closes the turn for the policy
            assert obs[: len(env.end_of_turn_ids)].tolist() == env.end_of_turn_ids
        stream += ids + obs.tolist()
        mask += [1] * len(ids) + [0] * len(obs)
        decoded_prompts.append(tok.decode(stream, skip_special_tokens=False))
        assert info["token_ids"] == stream and info["loss_mask"] == mask
    return {"stream": stream, "messages": info["messages"], "canonical": canonical, "prompts": decoded_prompts}


@pytest.mark.parametrize("template", ["chatml", "llama3"])
def test_invariant_history_keeping_templates(tokenizers: dict[str, Any], template: str) -> None:
    tok = tokenizers[template]
    env = TokenEnv(EchoEnv(max_attempts=2), tok)
    rng = np.random.default_rng(len(template))
    canonical = same_tokens = tool_episodes = 0
    for episode in range(400):
        result = run_episode(env, rng, seed=episode)
        final = env.render_messages(result["messages"], add_generation_prompt=False)
        assert tok.decode(result["stream"], skip_special_tokens=False) == final
        tool_episodes += any(m["role"] == "tool" for m in result["messages"])
        if result["canonical"] and not any(
            m["role"] == "assistant" and m["content"][:1].isspace() for m in result["messages"]
        ):
            canonical += 1
            same_tokens += result["stream"] == tok.encode(final, add_special_tokens=False)
    assert tool_episodes > 50 and canonical > 20
    if template == "chatml":
        # Turn boundaries fall on special tokens or a lone newline: canonically tokenized actions give the
        # template's own tokenization of the whole chat, token for token.
        assert same_tokens == canonical
    else:
        # Llama-3's generation prompt ends in "\n\n", which re-tokenizing the whole chat splits differently
        # from the prompt the policy was given: re-tokenization drifts, the TokenEnv stream does not.
        assert same_tokens < canonical


def _strip_think(text: str) -> str:
    return re.sub(r"<think>.*?</think>\n*", "", text, flags=re.DOTALL)


def test_prefix_property_for_a_template_that_drops_reasoning(tokenizers: dict[str, Any]) -> None:
    tok = tokenizers["chatml_drop_think"]
    env = TokenEnv(EchoEnv(max_attempts=2), tok)
    rng = np.random.default_rng(7)
    rewrites = 0
    for episode in range(400):
        result = run_episode(env, rng, seed=episode)  # checks each prompt = previous + action + delta
        stream_text = tok.decode(result["stream"], skip_special_tokens=False)
        # The deltas are the template's rendering of the new messages: with nothing dropped the stream is
        # exactly the history-keeping sibling template (ChatML) applied to the final messages ...
        keep = tok.apply_chat_template(
            result["messages"], tools=env._tools, chat_template=CHAT_TEMPLATES["chatml"][0], tokenize=False
        )
        assert stream_text == keep
        # ... and the full re-rendering differs only by the dropped reasoning.
        final = env.render_messages(result["messages"], add_generation_prompt=False)
        if final != stream_text:
            rewrites += 1
            assert _strip_think(final) == _strip_think(stream_text)
    assert rewrites > 20  # the rewriting path was exercised


def test_truncated_generation_gets_end_of_turn_from_env(tokenizers: dict[str, Any]) -> None:
    tok = tokenizers["chatml"]
    env = TokenEnv(EchoEnv(), tok)
    obs, info = env.reset(seed=0, options={"task_index": 0})
    assert tok.decode(obs).endswith("<|im_start|>assistant\n")
    ids = tok.encode('<tool_call>\n{"name": "echo", "arguments": {"text": "Zürich 🚀"}}\n</tool_call>')
    obs, reward, terminated, truncated, info = env.step(ids)  # no <|im_end|>: cut off by max_tokens
    assert info["generation_truncated"] and not (terminated or truncated) and reward == 0.0
    text = tok.decode(obs)
    assert text == (
        "<|im_end|>\n<|im_start|>user\n<tool_response>\nZürich 🚀\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    assert info["loss_mask"][-len(obs) :] == [0] * len(obs)
    assert info["loss_mask"][-len(obs) - len(ids) : -len(obs)] == [1] * len(ids)
    final_ids = [*tok.encode("The answer is 42."), tok.eos_token_id]
    obs, reward, terminated, _, info = env.step(final_ids)
    assert terminated and reward == 1.0 and tok.decode(obs) == "\n"  # the template's text after <|im_end|>


def test_env_error_replies_reach_the_token_stream(tokenizers: dict[str, Any]) -> None:
    """An empty message gets TextEnv's error reply; the policy must see it as tokens, not only as text."""
    tok = tokenizers["chatml"]
    env = TokenEnv(EchoEnv(), tok)
    env.reset(seed=0, options={"task_index": 0})
    obs, reward, terminated, truncated, info = env.step([tok.eos_token_id])  # an empty assistant message
    assert not (terminated or truncated) and reward == 0.0
    assert "[error] Your message was empty" in tok.decode(obs)
    assert info["messages"][-1]["role"] == "user" and info["messages"][-1]["content"].startswith("[error]")


@pytest.mark.filterwarnings("ignore:.*different from the unwrapped")
def test_spaces_and_invalid_actions(tokenizers: dict[str, Any]) -> None:
    from gymnasium.utils.env_checker import check_env

    tok = tokenizers["llama3"]
    env = TokenEnv(EchoEnv(), tok)
    assert env.observation_space.feature_space.n == env.action_space.feature_space.n == len(tok)
    check_env(env, skip_render_check=True)
    env.reset(seed=1)
    sample = env.action_space.sample()
    assert env.action_space.contains(sample)
    with pytest.raises(ValueError, match="out of range"):
        env.step([len(tok)])
    with pytest.raises(ValueError, match="out of range"):
        env.step([-1])
    obs, *_ = env.step(sample)  # a sampled action is a legal action
    assert env.observation_space.contains(obs)
