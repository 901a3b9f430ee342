"""``ScriptedChatPolicy``: a :class:`~gym_nemo.policies.token.TokenPolicy` whose replies a function writes.

It decodes each prompt, asks ``reply(prompt_text)`` for the assistant's text, and returns that text's ids
(plus the end-of-turn token) with fixed logprobs. Agent tests and the gateway benchmark use it to drive
real agent frameworks through exact, known tool calls without a trained model; :func:`calculator_reply`
calls the ``calculate`` tool once, then answers with its result, in the tool-call text the ChatML
templates of :mod:`gym_nemo.testing.tiny_model` render (so an agent's history re-renders to the same ids).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from gym_nemo.policies.token import Generation, SamplingParams

#: The logprob every scripted token gets (a recognisable constant, so tests can find policy tokens).
SCRIPTED_LOGPROB = -0.25


def tool_call_text(name: str, arguments: dict[str, Any]) -> str:
    """A tool call as the tiny model's ChatML templates render an assistant ``tool_calls`` entry."""
    return "\n<tool_call>\n" + json.dumps({"name": name, "arguments": json.dumps(arguments)}) + "\n</tool_call>"


def calculator_reply(prompt: str, *, think: bool = False) -> str:
    """Call ``calculate`` on the last question's expression; after a tool response, state the result."""
    turn = prompt.rsplit("<|im_start|>", 2)[-2] if prompt.count("<|im_start|>") >= 2 else prompt
    thought = "<think>\nI should use the tool.\n</think>" if think else ""
    if "<tool_response>" in turn:
        result = turn.split("<tool_response>\n")[-1].split("\n</tool_response>")[0]
        return f"{thought}{chr(10) if think else ''}The answer is {result}."
    questions = re.findall(r"What is (.+?)\?", prompt)
    return thought + tool_call_text("calculate", {"expression": questions[-1] if questions else "0"})


class ScriptedChatPolicy:
    """A token policy that says what ``reply(prompt_text)`` returns (see the module docstring).

    Args:
        tokenizer: encodes the replies and decodes the prompts.
        reply: prompt text -> assistant text; default :func:`calculator_reply`.
        delay_s: sleep per ``generate`` call (models a policy's latency in benchmarks).
    """

    name = "scripted"

    def __init__(self, tokenizer: Any, reply: Callable[[str], str] = calculator_reply, *, delay_s: float = 0.0) -> None:
        self.tokenizer = tokenizer
        self.reply = reply
        self.delay_s = delay_s
        self.calls = 0

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Generation]:
        import time

        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        out = []
        for prompt in prompts:
            text = self.tokenizer.decode(list(prompt), skip_special_tokens=False)
            body = self.reply(text)
            ids = list(self.tokenizer.encode(body, add_special_tokens=False))[: sampling.max_tokens]
            finish = "length"
            if len(ids) < sampling.max_tokens:
                ids.append(self.tokenizer.eos_token_id)
                finish = "stop"
            gen_text = self.tokenizer.decode(ids[:-1] if finish == "stop" else ids, skip_special_tokens=False)
            out.append(Generation(ids, [SCRIPTED_LOGPROB] * len(ids), finish, gen_text, list(prompt)))  # type: ignore[arg-type]
        return out
