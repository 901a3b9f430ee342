"""Tool messages carry the id of the call they answer (``call_{turn}_{n}``), and NeMo Gym rows pair on it."""

from __future__ import annotations

import gymnasium as gym

from gym_nemo.integrations.nemo_gym import transcript_to_response


def _call(name: str, code: str = "print(1)") -> str:
    return f'<tool_call>{{"name": "{name}", "arguments": {{"code": "{code}"}}}}</tool_call>'


def test_results_and_errors_point_at_their_calls(fresh_code_env) -> None:
    fresh_code_env.reset(seed=0)
    fresh_code_env.step(_call("execute_python", "x = 2"))
    # turn 2: an unknown tool first, then a good call, then text that does not parse as a call
    text = _call("no_such_tool") + _call("execute_python", "print(x * 21)") + "<tool_call>{not json</tool_call>"
    _, _, term, trunc, info = fresh_code_env.step(text)
    assert not (term or trunc)
    assert [c["id"] for c in info["tool_calls"]] == ["call_2_0", "call_2_1"]
    tools = [m for m in info["messages"] if m["role"] == "tool"]
    assert [(m["name"], m.get("tool_call_id")) for m in tools] == [
        ("execute_python", "call_1_0"),
        ("execute_python", "call_2_1"),  # results first, then errors (as the observation lists them)
        ("error", None),  # the unparsable block: no call to point at
        ("error", "call_2_0"),  # the unknown tool
    ]
    assert "42" in tools[1]["content"]
    response = transcript_to_response(info["messages"])
    calls = {item["call_id"]: item["name"] for item in response["output"] if item["type"] == "function_call"}
    outputs = [item for item in response["output"] if item["type"] == "function_call_output"]
    assert calls == {"call_1_0": "execute_python", "call_2_0": "no_such_tool", "call_2_1": "execute_python"}
    assert [o["call_id"] for o in outputs][:2] == ["call_1_0", "call_2_1"] and outputs[3]["call_id"] == "call_2_0"
    assert "42" in outputs[1]["output"]


def test_token_env_stream_is_unchanged_by_the_ids(policy, tools) -> None:
    from gym_nemo.wrappers import TokenEnv

    tok = policy.tokenizer
    env = TokenEnv(gym.make("nemo/CodeExec-v0", timeout_s=5), tok)
    try:
        ids, _ = env.reset(seed=0)
        stream = list(ids)
        action = [*tok.encode(_call("execute_python", "print(6*7)")), tok.eos_token_id]
        delta, *_, info = env.step(action)
        stream += action + list(delta)
    finally:
        env.close()
    messages = info["messages"]
    assert messages[-1]["tool_call_id"] == "call_1_0"
    rendered = tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    assert tok.decode(stream, skip_special_tokens=False) == rendered
