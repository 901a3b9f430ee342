"""The trajectory builder: segments by token prefix, every break classified, retries deduplicated, nothing
dropped silently; and a template that drops earlier reasoning (Qwen3-style) reported as a break."""

from __future__ import annotations

import json

import pytest

from gym_nemo.agents.calls import CallRecord
from gym_nemo.agents.trajectory import build_segments, build_trajectory, segment_records


def call(index: int, prompt: list[int], completion: list[int], messages: list[dict] | None = None, **kw) -> CallRecord:
    return CallRecord(
        index=index,
        run_id="r",
        kind="chat",
        request={"messages": messages or [{"role": "user", "content": f"q{index}"}]},
        prompt_ids=prompt,
        completion_ids=completion,
        logprobs=None if completion is None else [-1.0 * (index + 1)] * len(completion),
        finish_reason="stop",
        response={"role": "assistant", "content": f"a{index}"},
        **kw,
    )


USER = {"role": "user", "content": "q"}
ASSISTANT = {"role": "assistant", "content": "a"}
TOOL = {"role": "tool", "content": "t"}


def test_prefix_calls_make_one_segment_with_env_tokens_masked() -> None:
    calls = [call(0, [1, 2], [3, 4], [USER]), call(1, [1, 2, 3, 4, 5, 6], [7], [USER, ASSISTANT, TOOL])]
    segments, breaks = build_segments(calls)
    assert breaks == [] and len(segments) == 1
    s = segments[0]
    assert s["prompt_ids"] == [1, 2] and s["completion_ids"] == [3, 4, 5, 6, 7]
    assert s["completion_mask"] == [1, 1, 0, 0, 1]
    assert s["completion_logprobs"] == [-1.0, -1.0, 0.0, 0.0, -2.0]
    assert s["calls"] == [0, 1] and s["finish_reasons"] == ["stop", "stop"]


def test_interleaved_sub_agents_are_two_segments_and_one_branch() -> None:
    other = {"role": "user", "content": "sub-task"}
    calls = [
        call(0, [1, 2], [3], [USER]),
        call(1, [9, 9], [8], [other]),
        call(2, [1, 2, 3, 4], [5], [USER, ASSISTANT, TOOL]),
        call(3, [9, 9, 8, 7], [6], [other, ASSISTANT, TOOL]),
    ]
    segments, breaks = build_segments(calls)
    assert [s["calls"] for s in segments] == [[0, 2], [1, 3]]
    assert [(b["call"], b["kind"]) for b in breaks] == [(1, "branch")]


def test_retries_are_deduplicated_and_said() -> None:
    calls = [
        call(0, [1, 2], [3], [USER]),
        call(1, [1, 2], [4, 4], [USER]),
        call(2, [1, 2, 4, 4, 5], [6], [USER, ASSISTANT, TOOL]),
    ]
    segments, breaks = build_segments(calls)
    assert len(segments) == 1 and segments[0]["completion_ids"] == [4, 4, 5, 6]
    assert segments[0]["completion_mask"] == [1, 1, 0, 1] and segments[0]["calls"] == [1, 2]
    assert breaks == [{"call": 1, "kind": "retry", "of_call": 0, "deduplicated": True, "detail": breaks[0]["detail"]}]


def test_retokenized_and_rewritten_histories_are_classified() -> None:
    first = call(0, [1, 2], [3, 4], [USER], prompt_text="<u>q", completion_text="<a>x")
    retok = call(1, [1, 2, 34, 5], [6], [USER, ASSISTANT, TOOL], prompt_text="<u>q<a>x<t>", completion_text="y")
    _, breaks = build_segments([first, retok])
    assert [b["kind"] for b in breaks] == ["retokenization"]
    rewritten = call(1, [1, 2, 7, 5], [6], [USER, ASSISTANT, TOOL], prompt_text="<u>q<a><t>", completion_text="y")
    _, breaks = build_segments([first, rewritten])
    assert [b["kind"] for b in breaks] == ["template_rewrite"] and "ids agree for 2 tokens" in breaks[0]["detail"]


def test_calls_without_ids_are_counted_not_dropped_silently() -> None:
    missing = call(1, None, None, [USER])  # type: ignore[arg-type]
    record = build_trajectory([call(0, [1], [2], [USER]), missing], reward=0.5)
    assert [b["kind"] for b in record.breaks] == ["missing_ids"] and len(record.segments) == 1
    assert record.num_turns == 2 and record.reward == 0.5


def test_infra_errors_are_truncated_not_scored() -> None:
    record = build_trajectory([call(0, [1], [2])], reward=1.0, infra_error="workflow crashed")
    assert record.truncated and not record.terminated and record.reward == 0.0 and record.step_rewards == []


def test_records_round_trip_and_split_per_segment() -> None:
    calls = [call(0, [1, 2], [3], [USER]), call(1, [9], [8], [{"role": "user", "content": "other"}])]
    record = build_trajectory(calls, reward=1.0, task_id="t", group=3)
    row = json.loads(json.dumps(record.to_row()))
    assert len(row["segments"]) == 2 and row["breaks"][0]["kind"] == "branch"
    assert row["prompt_ids"] == [9] and row["completion_ids"] == [8] and row["completion_mask"] == [1]
    parts = segment_records(record)
    assert [(p.task_id, p.prompt_ids, p.completion_ids, p.reward, p.group) for p in parts] == [
        ("t#0", [1, 2], [3], 1.0, 3),
        ("t#1", [9], [8], 1.0, 3),
    ]


def test_a_template_that_drops_reasoning_is_reported_as_a_break() -> None:
    """Qwen3-style: the second question's prompt no longer holds the first answer's <think> block."""
    pytest.importorskip("fastapi")
    pytest.importorskip("transformers")
    import httpx

    from gym_nemo.agents import Gateway, PolicyBackend
    from gym_nemo.testing.scripted_policy import ScriptedChatPolicy, calculator_reply
    from gym_nemo.testing.tiny_model import build_tokenizer

    tokenizer = build_tokenizer("chatml_drop_think")
    policy = ScriptedChatPolicy(tokenizer, lambda prompt: calculator_reply(prompt, think=True))
    with Gateway(PolicyBackend(policy)) as gw:
        run = gw.open_run()
        messages: list[dict] = [{"role": "user", "content": "What is 2 * 3?"}]
        for follow_up in (None, "What is 5 * 5?"):
            if follow_up:
                messages.append({"role": "user", "content": follow_up})
            for _ in range(2):  # a tool call, then the answer
                reply = httpx.post(f"{run.base_url}/chat/completions", json={"messages": messages}).json()
                message = reply["choices"][0]["message"]
                messages.append(message)
                if message.get("tool_calls"):
                    messages.append({"role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": "x"})
        record = build_trajectory(run.calls, reward=1.0)
    assert len(run.calls) == 4
    assert [(b["call"], b["kind"]) for b in record.breaks] == [(2, "template_rewrite")]
    assert [s["calls"] for s in record.segments] == [[0, 1], [2, 3]]
    assert "<think>" in run.calls[1].completion_text
    assert "<think>" not in run.calls[2].prompt_text.split("What is 5 * 5?")[0]  # the template dropped it


def test_a_tokenizer_tells_retokenized_upstream_calls_apart() -> None:
    """Upstream calls come with ids only: the builder decodes them to see the text was kept, the ids not."""
    pytest.importorskip("transformers")
    from gym_nemo.testing.tiny_model import build_tokenizer

    tok = build_tokenizer("chatml")
    chars = [i for c in "the answer" for i in tok.encode(c, add_special_tokens=False)]  # an id per character
    merged = tok.encode("the answer is", add_special_tokens=False)
    assert merged[: len(chars)] != chars  # the BPE merges what the model emitted one character at a time
    calls = [call(0, chars[:4], chars[4:], [USER]), call(1, merged, [5], [USER, ASSISTANT, TOOL])]
    assert [b["kind"] for b in build_segments(calls)[1]] == ["template_rewrite"]  # no text: cannot tell
    assert [b["kind"] for b in build_segments(calls, tokenizer=tok)[1]] == ["retokenization"]
