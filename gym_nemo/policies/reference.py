"""``ReferencePolicy``: replays each task's reference solution, so rollouts need no model or GPU.

Each episode it first calls the env's first tool with the reference code (a real multi-turn episode
through the sandbox), then submits the reference as its final answer. With ``corrupt_rate`` > 0 a seeded
share of episodes submit a broken answer instead (wrong return value, syntax error, or no code block; for a
text answer such as ``\\boxed{42}`` or ``Answer: C``, a wrong answer or none), so rewards are mixed and every
verifier path runs. A task whose reference is a tuple of messages (multi-turn
tool use) gets them one per turn; corrupted, it skips to the last one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gym_nemo.core.task import TaskSource
from gym_nemo.core.tool_calls import last_code_block

CORRUPTIONS = ("wrong_return", "syntax_error", "no_code")
#: For references whose final answer is text (``\\boxed{...}``, ``<answer>...</answer>``, ``Answer: X``).
TEXT_CORRUPTIONS = ("wrong_answer", "no_answer")
_TEXT_ANSWER = re.compile(r"<answer>(.*?)</answer>|^Answer: ([A-Z])$", re.MULTILINE | re.DOTALL)


def _final_answer_span(answer: str) -> tuple[int, int] | None:
    """Where the final answer's text is: inside the last ``\\boxed{}``, ``<answer>`` block or ``Answer: X``."""
    start = answer.rfind("\\boxed{")
    if start >= 0:
        depth, begin = 0, start + len("\\boxed{")
        for i in range(begin - 1, len(answer)):
            depth += {"{": 1, "}": -1}.get(answer[i], 0)
            if depth == 0:
                return begin, i
    matches = list(_TEXT_ANSWER.finditer(answer))
    if matches:
        group = 1 if matches[-1].group(1) is not None else 2
        return matches[-1].span(group)
    return None


def _wrong(text: str) -> str:
    """A different answer: n+1 for an integer, the next of A-D for a letter, else the text plus one."""
    if re.fullmatch(r"-?\d+", text.strip()):
        return str(int(text) + 1)
    if re.fullmatch(r"[A-Z]", text.strip()):
        return "ABCD"[("ABCD".index(text.strip()) + 1) % 4] if text.strip() in "ABCD" else "A"
    return f"{text} + 1"


def corrupt(answer: str, kind: str) -> str:
    """A broken variant of a reference answer."""
    if kind in TEXT_CORRUPTIONS:
        span = _final_answer_span(answer)
        if kind == "no_answer" or span is None:
            return "I am not sure of the answer, so I will leave it open."
        return answer[: span[0]] + _wrong(answer[span[0] : span[1]]) + answer[span[1] :]
    code = last_code_block(answer) or ""
    if kind == "wrong_return":
        # Shadow the solution with a function of the same name that returns None.
        names = re.findall(r"^def (\w+)\(", code, re.MULTILINE)  # top-level functions only
        stub = f"def {names[-1]}(*args, **kwargs):\n    return None\n" if names else "pass\n"
        return f"```python\n{code}\n\n{stub}```"
    if kind == "syntax_error":
        return f"```python\n{code[: max(1, len(code) // 2)]}\n  )(\n```"
    return "I believe the function is straightforward, so I will describe it in words instead of code."


class ReferencePolicy:
    """Replays reference solutions (see the module docstring). ``tasks`` must hold every task id played.

    Examples:
        >>> import gymnasium as gym, gym_nemo
        >>> from gym_nemo.envs.code_exec import CodeExecEnv
        >>> from gym_nemo.policies import ReferencePolicy
        >>> policy = ReferencePolicy(CodeExecEnv.load_tasks(), corrupt_rate=0.0)
        >>> env = gym.make("nemo/CodeExec-v0")
        >>> obs, info = env.reset(options={"task_id": "HumanEval/0"})
        >>> action, = policy.act([obs], [info])  # first it runs its code through the env's tool
        >>> obs, reward, terminated, truncated, info = env.step(action)
        >>> obs, reward, terminated
        ('exit code 0\\nstdout:\\ncompiled ok\\n', 0.0, False)
        >>> action, = policy.act([obs], [info])  # then it submits the reference solution
        >>> obs, reward, terminated, truncated, info = env.step(action)
        >>> obs, reward, terminated
        ('[verdict] 8/8 tests passed', 1.0, True)
        >>> env.close()
    """

    name = "reference"

    def __init__(self, tasks: TaskSource, *, corrupt_rate: float = 0.0, use_tools: bool = True, seed: int = 0):
        if not 0.0 <= corrupt_rate <= 1.0:
            raise ValueError("corrupt_rate must be in [0, 1]")
        self.tasks = tasks
        self.corrupt_rate = corrupt_rate
        self.use_tools = use_tools
        self.rng = np.random.default_rng(seed)

    def act(self, observations: Sequence[str], infos: Sequence[Mapping[str, Any]]) -> list[str]:
        return [self._act_one(info) for info in infos]

    def _act_one(self, info: Mapping[str, Any]) -> str:
        task = self.tasks.by_id(str(info["task_id"]))
        if task.reference is None:
            raise ValueError(f"task {task.task_id!r} has no reference solution to replay")
        turn = int(info.get("turn", 0))
        if isinstance(task.reference, tuple):  # a turn-by-turn script; corrupted: skip straight to the last message
            if self.rng.random() < self.corrupt_rate:
                return task.reference[-1]
            return task.reference[min(turn, len(task.reference) - 1)]
        code_tools = [
            t["function"]["name"]
            for t in info.get("tools", ())
            if "code" in t["function"].get("parameters", {}).get("properties", {})
        ]
        if self.use_tools and turn == 0 and code_tools:
            code = last_code_block(task.reference) or task.reference
            call = {"name": code_tools[0], "arguments": {"code": code + "\nprint('compiled ok')"}}
            return f"Let me check that my solution compiles.\n<tool_call>\n{json.dumps(call)}\n</tool_call>"
        if self.rng.random() < self.corrupt_rate:
            kinds = TEXT_CORRUPTIONS if _final_answer_span(task.reference) else CORRUPTIONS
            return corrupt(task.reference, kinds[int(self.rng.integers(len(kinds)))])
        return f"Here is my solution:\n{task.reference}"
