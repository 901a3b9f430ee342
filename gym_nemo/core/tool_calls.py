"""Parse tool calls and code out of an assistant message, in the formats models actually emit.

Formats recognised, in order:
1. Hermes / Qwen: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (any number of them).
2. OpenAI-style JSON: the whole message (optionally inside a ```json fence) is a call object
   ``{"name": ..., "arguments": ...}``, a list of them, or ``{"tool_calls": [{"function": {...}}]}``.
   ``arguments`` may be an object or a JSON-encoded string, as the OpenAI API sends it.
Fenced code blocks (```python ... ```) are extracted by :func:`extract_code_blocks`; envs decide
whether a block is a final answer or a call.

Malformed calls are not exceptions: they come back as :class:`ToolCallError` entries so the env can
tell the policy exactly what was wrong.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_HERMES_RE = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)
_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+\-.]*)[^\n]*\n(.*?)(?:\n?[ \t]*```|\Z)", re.DOTALL)
_JSON_FENCE_RE = re.compile(r"\A```[ \t]*(?:json)?[ \t]*\n(.*?)\n?```\Z", re.DOTALL)


@dataclass(frozen=True)
class ToolCall:
    """One well-formed call: a tool name and its decoded argument object."""

    name: str
    arguments: dict[str, Any]
    raw: str = field(default="", compare=False)


@dataclass(frozen=True)
class ToolCallError:
    """A call the policy tried to make but that could not be decoded; ``message`` says why."""

    message: str
    raw: str = ""


@dataclass(frozen=True)
class ParsedMessage:
    """The tool calls of one assistant message; ``is_final`` when it contains none at all."""

    calls: tuple[ToolCall, ...] = ()
    errors: tuple[ToolCallError, ...] = ()

    @property
    def is_final(self) -> bool:
        return not self.calls and not self.errors


def _excerpt(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _decode_call(obj: Any, raw: str) -> ToolCall | ToolCallError:
    if isinstance(obj, dict) and isinstance(obj.get("function"), dict):  # {"type": "function", "function": {...}}
        obj = obj["function"]
    if not isinstance(obj, dict):
        return ToolCallError(f"a tool call must be a JSON object, got {type(obj).__name__}", raw)
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return ToolCallError('a tool call needs a string "name"', raw)
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as exc:
            return ToolCallError(f"arguments of {name!r} are not valid JSON: {exc.msg} at char {exc.pos}", raw)
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return ToolCallError(f'"arguments" of {name!r} must be a JSON object, got {type(args).__name__}', raw)
    return ToolCall(name=name, arguments=args, raw=raw)


def _parse_hermes(text: str) -> ParsedMessage | None:
    bodies = _HERMES_RE.findall(text)
    if not bodies:
        return None
    calls: list[ToolCall] = []
    errors: list[ToolCallError] = []
    for body in bodies:
        raw = body.strip()
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            errors.append(
                ToolCallError(f"<tool_call> body is not valid JSON ({exc.msg} at char {exc.pos}): {_excerpt(raw)}", raw)
            )
            continue
        decoded = _decode_call(obj, raw)
        (calls if isinstance(decoded, ToolCall) else errors).append(decoded)  # type: ignore[arg-type]
    return ParsedMessage(tuple(calls), tuple(errors))


def _parse_openai_json(text: str) -> ParsedMessage | None:
    stripped = text.strip()
    fenced = _JSON_FENCE_RE.match(stripped)
    if fenced:
        stripped = fenced.group(1).strip()
    if not stripped or stripped[0] not in "[{":
        return None
    try:
        obj = json.loads(stripped)
    except json.JSONDecodeError:
        return None  # ordinary prose or code that happens to start with a brace
    if isinstance(obj, dict) and isinstance(obj.get("tool_calls"), list):
        items = obj["tool_calls"]
    elif isinstance(obj, dict) and "name" in obj and ("arguments" in obj or "parameters" in obj):
        items = [obj]
    elif isinstance(obj, list) and obj and all(isinstance(o, dict) and ("name" in o or "function" in o) for o in obj):
        items = obj
    else:
        return None
    calls: list[ToolCall] = []
    errors: list[ToolCallError] = []
    for item in items:
        decoded = _decode_call(item, json.dumps(item, ensure_ascii=False))
        (calls if isinstance(decoded, ToolCall) else errors).append(decoded)  # type: ignore[arg-type]
    return ParsedMessage(tuple(calls), tuple(errors))


def parse_tool_calls(text: str) -> ParsedMessage:
    """Find the tool calls in ``text`` (Hermes tags first, then a whole-message OpenAI JSON call).

    Examples:
        >>> from gym_nemo.core import parse_tool_calls
        >>> parsed = parse_tool_calls('Let me run it.<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>')
        >>> [(call.name, call.arguments) for call in parsed.calls], parsed.is_final
        ([('f', {'x': 1})], False)
        >>> parse_tool_calls('[{"name": "f", "arguments": {"x": 2}}]').calls[0].arguments  # OpenAI-style JSON
        {'x': 2}
        >>> print(parse_tool_calls('<tool_call>{"name": 3</tool_call>').errors[0].message)  # told to the policy
        <tool_call> body is not valid JSON (Expecting ',' delimiter at char 10): {"name": 3
        >>> parse_tool_calls("The answer is 4.").is_final  # no call at all: the final answer
        True
    """
    for parser in (_parse_hermes, _parse_openai_json):
        parsed = parser(text)
        if parsed is not None:
            return parsed
    return ParsedMessage()


def extract_code_blocks(text: str, languages: tuple[str, ...] = ("python", "py", "python3", "")) -> list[str]:
    """All fenced code blocks whose info string is one of ``languages`` ("" = no language tag).

    An unterminated final fence (a generation cut off mid-block) still yields its content.
    """
    wanted = {lang.lower() for lang in languages}
    return [body for lang, body in _FENCE_RE.findall(text) if lang.lower() in wanted]


def last_code_block(text: str, languages: tuple[str, ...] = ("python", "py", "python3", "")) -> str | None:
    """The last fenced block in ``languages``, or ``None`` if the message has none."""
    blocks = extract_code_blocks(text, languages)
    return blocks[-1] if blocks else None
