"""Shared pieces of the agent tests: an upstream gateway process to kill, a text policy for the calculator."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from gym_nemo.testing.scripted_policy import tool_call_text

# A gateway with the scripted policy in its own process: prints its base URL for one run, then serves.
UPSTREAM_SCRIPT = """
import sys, time
from gym_nemo.agents import Gateway, PolicyBackend
from gym_nemo.testing.scripted_policy import ScriptedChatPolicy
from gym_nemo.testing.tiny_model import build_tokenizer
gw = Gateway(PolicyBackend(ScriptedChatPolicy(build_tokenizer("chatml")))).start()
print(gw.open_run("upstream").base_url, flush=True)
while True:
    time.sleep(1)
"""


def start_upstream() -> tuple[subprocess.Popen[str], str]:
    """A real OpenAI-compatible server in another process (returns vLLM's token-id fields); its run URL."""
    proc = subprocess.Popen([sys.executable, "-c", UPSTREAM_SCRIPT], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise RuntimeError("the upstream gateway did not start")
    return proc, url


class CalculatorTextPolicy:
    """A text policy for the calculator workflow env: calls the tool once, then states its result."""

    name = "calculator-text"

    def act(self, observations: Sequence[str], infos: Sequence[Mapping[str, Any]]) -> list[str]:
        actions = []
        for info in infos:
            messages = list(info.get("messages") or [])
            if messages and messages[-1]["role"] == "tool":
                actions.append(f"The answer is {messages[-1]['content']}.")
            else:
                question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "0")
                expression = question.removeprefix("What is ").rstrip("?")
                actions.append(tool_call_text("calculate", {"expression": expression}))
        return actions


def sse_events(text: str) -> list[Any]:
    """The JSON events of a server-sent-events body (``[DONE]`` as the string)."""
    events = []
    for line in text.splitlines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events
