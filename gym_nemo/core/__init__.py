"""The env contract: ``TextEnv``, spaces, tool-call parsing, tasks, verdicts. Imports no env, policy
or sandbox backend."""

from gym_nemo.core.env import FORMAT_PENALTY, TextEnv
from gym_nemo.core.errors import InfraError
from gym_nemo.core.spaces import UnicodeText
from gym_nemo.core.task import Task, TaskSource, input_messages, read_jsonl
from gym_nemo.core.tool_calls import (
    ParsedMessage,
    ToolCall,
    ToolCallError,
    extract_code_blocks,
    parse_tool_calls,
)
from gym_nemo.core.tools import Tool, ToolArgumentError
from gym_nemo.core.verdict import Verdict

__all__ = [
    "FORMAT_PENALTY",
    "InfraError",
    "ParsedMessage",
    "Task",
    "TaskSource",
    "TextEnv",
    "Tool",
    "ToolArgumentError",
    "ToolCall",
    "ToolCallError",
    "UnicodeText",
    "Verdict",
    "extract_code_blocks",
    "input_messages",
    "parse_tool_calls",
    "read_jsonl",
]
