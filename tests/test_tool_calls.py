import json

from gym_nemo.core.tool_calls import extract_code_blocks, last_code_block, parse_tool_calls


def test_hermes_single_and_multiple() -> None:
    text = 'Let me run it.\n<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>'
    parsed = parse_tool_calls(text)
    assert [(c.name, c.arguments) for c in parsed.calls] == [("f", {"x": 1})]
    two = text + '\n<tool_call>{"name": "g", "arguments": {}}</tool_call>'
    assert [c.name for c in parse_tool_calls(two).calls] == ["f", "g"]


def test_hermes_unterminated_tag_still_parses() -> None:
    parsed = parse_tool_calls('<tool_call>{"name": "f", "arguments": {"a": "b"}}')
    assert parsed.calls[0].arguments == {"a": "b"}


def test_hermes_invalid_json_is_an_error_not_a_final_answer() -> None:
    parsed = parse_tool_calls('<tool_call>{"name": "f", "arguments": {"x": </tool_call>')
    assert not parsed.calls and not parsed.is_final
    assert "not valid JSON" in parsed.errors[0].message


def test_arguments_as_json_string_like_openai() -> None:
    call = {"name": "f", "arguments": json.dumps({"code": "print(1)"})}
    parsed = parse_tool_calls(f"<tool_call>{json.dumps(call)}</tool_call>")
    assert parsed.calls[0].arguments == {"code": "print(1)"}


def test_arguments_must_be_an_object() -> None:
    parsed = parse_tool_calls('<tool_call>{"name": "f", "arguments": [1, 2]}</tool_call>')
    assert "must be a JSON object" in parsed.errors[0].message
    parsed = parse_tool_calls('<tool_call>{"arguments": {}}</tool_call>')
    assert '"name"' in parsed.errors[0].message


def test_openai_style_whole_message_json() -> None:
    assert parse_tool_calls('{"name": "f", "arguments": {"x": 2}}').calls[0].arguments == {"x": 2}
    fenced = '```json\n{"name": "f", "arguments": "{\\"x\\": 3}"}\n```'
    assert parse_tool_calls(fenced).calls[0].arguments == {"x": 3}
    listed = '[{"name": "f", "arguments": {}}, {"name": "g", "arguments": {}}]'
    assert [c.name for c in parse_tool_calls(listed).calls] == ["f", "g"]
    wrapped = {"tool_calls": [{"type": "function", "function": {"name": "h", "arguments": "{}"}}]}
    assert parse_tool_calls(json.dumps(wrapped)).calls[0].name == "h"


def test_plain_answers_and_json_data_are_final() -> None:
    assert parse_tool_calls("The answer is 42.").is_final
    assert parse_tool_calls('{"answer": 42}').is_final  # JSON, but not a call
    assert parse_tool_calls("```python\ndef f():\n    return {1: 2}\n```").is_final
    assert parse_tool_calls("").is_final


def test_code_blocks() -> None:
    text = "a\n```python\nx = 1\n```\nb\n```\ny = 2\n```\n```bash\nls\n```\n```py\nz = 3\n```"
    assert extract_code_blocks(text) == ["x = 1", "y = 2", "z = 3"]
    assert last_code_block(text) == "z = 3"
    assert extract_code_blocks(text, ("bash",)) == ["ls"]
    assert last_code_block("no code here") is None
    assert last_code_block("```python\ndef f():\n    return 1") == "def f():\n    return 1"  # cut off
