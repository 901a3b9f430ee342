"""The OpenAI Responses objects NeMo Gym passes around, to and from gym_nemo chats.

NeMo Gym's resource servers take an episode as a Responses API object (``response.output``: message,
function_call and function_call_output items) and read the answer out of it. :func:`transcript_to_response`
builds one from a TextEnv chat; :func:`response_text` and :func:`last_output_text` read the answer back. These
live in ``core`` so envs (which run NeMo Gym's servers) and integrations (which re-score rollouts) share one
conversion.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from gym_nemo.core.tool_calls import parse_tool_calls


def message_texts(response: Mapping[str, Any]) -> list[str]:
    """The text of each output message, in order (``output_text`` parts joined; a plain string content as is)."""
    texts = []
    for item in response.get("output") or []:
        if not isinstance(item, Mapping) or item.get("type", "message") != "message":
            continue
        parts = item.get("content") or []
        if isinstance(parts, str):
            texts.append(parts)
        else:
            texts.append(
                "".join(str(p.get("text") or "") for p in parts if p.get("type", "output_text") == "output_text")
            )
    return texts


def output_text(response: Mapping[str, Any]) -> str:
    """Every output message's text joined, the OpenAI SDK's ``Response.output_text``: what NeMo Gym's
    math_with_judge, polymath, mcqa, code_gen, evalplus and reasoning_gym servers check."""
    return "".join(message_texts(response))


def response_text(response: Mapping[str, Any]) -> str:
    """The final assistant text of a Responses API object (the last output message's text parts)."""
    for item in reversed(response.get("output") or []):
        if item.get("type", "message") == "message" and item.get("role", "assistant") == "assistant":
            parts = item.get("content") or []
            if isinstance(parts, str):
                return parts
            return "".join(p.get("text", "") for p in parts if p.get("type") in ("output_text", "text", None))
    return ""


def last_output_text(response: Mapping[str, Any]) -> str:
    """The text NeMo Gym's instruction_following and ifbench servers check: ``output[-1].content[0].text``."""
    output = response.get("output") or []
    content = output[-1].get("content") if output and isinstance(output[-1], Mapping) else None
    if isinstance(content, list) and content and isinstance(content[0], Mapping):
        return str(content[0].get("text") or "")
    return ""


def _text_item(role: str, text: str, index: int) -> dict[str, Any]:
    kind = "output_text" if role == "assistant" else "input_text"
    return {
        "id": f"msg_{index}",
        "type": "message",
        "role": role,
        "status": "completed",
        "content": [{"type": kind, "text": text, **({"annotations": []} if role == "assistant" else {})}],
    }


def transcript_to_response(messages: Sequence[Mapping[str, Any]], *, model: str = "") -> dict[str, Any]:
    """A Responses API object from an episode's chat: everything from the first assistant message on.

    Assistant messages become ``message`` items with their text verbatim (tool-call tags included, so the last
    item's text is the final answer), each decoded tool call a ``function_call`` item, tool results
    ``function_call_output`` items, and env feedback ``user`` messages. The n-th call of the t-th assistant
    message gets the ``call_id`` ``call_{t}_{n}``, the id TextEnv gives its result as ``tool_call_id``;
    tool messages without one (transcripts from elsewhere) are paired with the calls in order.
    """
    start = next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), len(messages))
    output: list[dict[str, Any]] = []
    pending: list[str] = []
    turn = 0
    for index, message in enumerate(messages[start:]):
        role, text = message.get("role"), str(message.get("content") or "")
        if role == "assistant":
            turn += 1
            output.append(_text_item("assistant", text, index))
            parsed = parse_tool_calls(text)
            pending = []
            for n, call in enumerate(parsed.calls):
                call_id = f"call_{turn}_{n}"
                pending.append(call_id)
                output.append(
                    {
                        "id": f"fc_{index}_{n}",
                        "type": "function_call",
                        "call_id": call_id,
                        "name": call.name,
                        "arguments": json.dumps(call.arguments, ensure_ascii=False),
                        "status": "completed",
                    }
                )
        elif role == "tool" and message.get("tool_call_id"):
            call_id = str(message["tool_call_id"])
            output.append({"type": "function_call_output", "call_id": call_id, "output": text})
        elif role == "tool":
            call_id = pending.pop(0) if pending and message.get("name") != "error" else f"error_{index}"
            output.append({"type": "function_call_output", "call_id": call_id, "output": text})
        else:
            output.append(_text_item(str(role), text, index))
    digest = hashlib.sha256(json.dumps(output, sort_keys=True).encode()).hexdigest()[:24]
    return {
        "id": f"resp_{digest}",
        "object": "response",
        "created_at": 0,
        "model": model,
        "status": "completed",
        "output": output,
    }
