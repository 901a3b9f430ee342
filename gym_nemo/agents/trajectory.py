"""A run's captured calls -> token-exact segments -> one :class:`~gym_nemo.rollout.records.EpisodeRecord`.

A call *extends* a segment when its prompt ids start with the segment's ids so far (the last call's prompt
+ completion): the ids in between are env tokens (tool results, the next user turn, the template's
generation prompt; mask 0, logprob 0.0) and the call's completion ids are policy tokens (mask 1, their
logprobs). Any other call starts a new segment, and the break is recorded with its kind:

``retry``
    the prompt ids equal an earlier call's (a client retry, or a framework re-asking): deduplicated, the
    later reply replaces the earlier one when the earlier one ended its segment; else it is a branch.
``retokenization``
    the chat continues the earlier call's (same messages, its reply included) and its text starts with
    the earlier prompt + completion text, but the ids differ: the history was re-tokenized.
``template_rewrite``
    the chat continues the earlier call's, but the rendered text of the history changed (a template that
    drops earlier reasoning, as Qwen3's does; a reply re-rendered in another tool-call format).
``branch``
    another conversation: a sub-agent, a parallel branch, a compacted context.
``missing_ids``
    the call has no token ids (an upstream that does not return them); it is in no segment.

The record's top-level token fields (``prompt_ids``, ``completion_ids``, ``completion_mask``,
``completion_logprobs``, ``finish_reasons``) are the last segment's, so trainers' adapters read it as they
read any token rollout; ``segments`` holds every segment and ``breaks`` every break. Trainers that learn
from every segment use :func:`segment_records`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gym_nemo.agents.calls import CallRecord
from gym_nemo.rollout.engine import EpisodeTrace
from gym_nemo.rollout.records import EpisodeRecord


@dataclass
class _Segment:
    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    completion_mask: list[int] = field(default_factory=list)
    completion_logprobs: list[float] | None = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)
    last: CallRecord | None = None
    last_start: int = 0  # where the last call's completion starts in completion_ids

    @property
    def context(self) -> list[int]:
        return self.prompt_ids + self.completion_ids

    def add(self, call: CallRecord, env_ids: Sequence[int]) -> None:
        ids, logprobs = list(call.completion_ids or ()), call.logprobs
        self.completion_ids += list(env_ids)
        self.completion_mask += [0] * len(env_ids)
        self.last_start = len(self.completion_ids)
        self.completion_ids += ids
        self.completion_mask += [1] * len(ids)
        if self.completion_logprobs is not None and logprobs is not None and len(logprobs) == len(ids):
            self.completion_logprobs += [0.0] * len(env_ids) + [float(x) for x in logprobs]
        else:
            self.completion_logprobs = None  # never invent logprobs a backend did not return
        self.finish_reasons.append(call.finish_reason)
        self.calls.append(call.index)
        self.last = call

    def replace_last(self, call: CallRecord) -> None:
        """A retry of the segment's last call: its reply takes the place of the earlier one."""
        del self.completion_ids[self.last_start :], self.completion_mask[self.last_start :]
        if self.completion_logprobs is not None:
            del self.completion_logprobs[self.last_start :]
        self.finish_reasons.pop()
        self.calls.pop()
        self.add(call, [])

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_ids": self.prompt_ids,
            "completion_ids": self.completion_ids,
            "completion_mask": self.completion_mask,
            "completion_logprobs": self.completion_logprobs,
            "finish_reasons": self.finish_reasons,
            "calls": self.calls,
        }


def _as_call(call: CallRecord | Mapping[str, Any]) -> CallRecord:
    if isinstance(call, CallRecord):
        return call
    known = {f.name for f in dataclasses.fields(CallRecord)}
    return CallRecord(**{k: v for k, v in call.items() if k in known})


def _continues(call: CallRecord, earlier: CallRecord) -> bool:
    """Whether ``call``'s chat is ``earlier``'s chat plus its reply plus more (roles and non-assistant text)."""
    before, now = earlier.request.get("messages"), call.request.get("messages")
    if not before or not now or len(now) <= len(before) or now[len(before)].get("role") != "assistant":
        return False
    return all(
        a.get("role") == b.get("role") and (a.get("role") == "assistant" or a.get("content") == b.get("content"))
        for a, b in zip(before, now, strict=False)
    )


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _classify(call: CallRecord, earlier: CallRecord) -> tuple[str, str]:
    if not _continues(call, earlier):
        return "branch", f"call {call.index} is another conversation than call {earlier.index}'s"
    # The text the earlier call ended with; unknown (an upstream that sends no text) never matches.
    shown = None if earlier.prompt_text is None else earlier.prompt_text + (earlier.completion_text or "\x00")
    if shown is not None and call.prompt_text is not None and call.prompt_text.startswith(shown):
        return "retokenization", f"call {call.index} continues call {earlier.index}'s text, but its ids re-tokenize it"
    common = _common_prefix(call.prompt_ids or (), (earlier.prompt_ids or []) + (earlier.completion_ids or []))
    return "template_rewrite", (
        f"call {call.index} continues call {earlier.index}'s chat, but the history was rendered differently "
        f"(ids agree for {common} tokens; e.g. a template that drops earlier reasoning)"
    )


def _with_texts(call: CallRecord, tokenizer: Any) -> CallRecord:
    """The call with its prompt and completion text decoded from its ids when the backend sent no text."""
    if tokenizer is None or call.prompt_ids is None or call.completion_ids is None or call.prompt_text is not None:
        return call

    def decode(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    return dataclasses.replace(call, prompt_text=decode(call.prompt_ids), completion_text=decode(call.completion_ids))


def build_segments(
    calls: Sequence[CallRecord | Mapping[str, Any]], *, tokenizer: Any | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The token-exact segments of a run's calls (in call order) and the breaks between them (module doc).

    ``tokenizer`` (optional) decodes the ids of calls that came without text (an upstream backend's), so their
    breaks can be told apart as ``retokenization`` or ``template_rewrite``."""
    segments: list[_Segment] = []
    breaks: list[dict[str, Any]] = []
    by_prompt: dict[tuple[int, ...], _Segment] = {}
    for call in (_with_texts(_as_call(c), tokenizer) for c in calls):
        if call.prompt_ids is None or call.completion_ids is None:
            breaks.append({"call": call.index, "kind": "missing_ids", "detail": "the backend returned no token ids"})
            continue
        prompt = list(call.prompt_ids)
        retried = by_prompt.get(tuple(prompt))
        if retried is not None and retried.last is not None and list(retried.last.prompt_ids or ()) == prompt:
            breaks.append(
                {"call": call.index, "kind": "retry", "of_call": retried.last.index, "deduplicated": True,
                 "detail": f"call {call.index} repeats call {retried.last.index}'s prompt; its reply replaces that one"}
            )  # fmt: skip
            retried.replace_last(call)
            continue
        extended = max(
            (s for s in segments if len(s.context) <= len(prompt) and prompt[: len(s.context)] == s.context),
            key=lambda s: len(s.context),
            default=None,
        )
        if extended is not None:
            extended.add(call, prompt[len(extended.context) :])
            segment = extended
        else:
            segment = _Segment(prompt_ids=prompt)
            segment.add(call, [])
            if segments:
                nearest = max(
                    (s for s in segments if s.last is not None),
                    key=lambda s: (_common_prefix(prompt, s.context), s.last.index if s.last else -1),
                )
                assert nearest.last is not None
                kind, detail = (
                    ("retry", f"call {call.index} repeats call {nearest.last.index}'s prompt after it was extended")
                    if tuple(prompt) in by_prompt
                    else _classify(call, nearest.last)
                )
                breaks.append({"call": call.index, "kind": kind, "of_call": nearest.last.index, "detail": detail})
            segments.append(segment)
        by_prompt[tuple(prompt)] = segment
    return [s.to_dict() for s in segments], breaks


def build_trajectory(
    calls: Sequence[CallRecord | Mapping[str, Any]],
    *,
    reward: float = 0.0,
    task_row: Mapping[str, Any] | None = None,
    task_id: str = "",
    env_id: str = "nemo/AgentWorkflow-v0",
    terminated: bool = True,
    infra_error: str | None = None,
    policy: str = "",
    duration_s: float = 0.0,
    versions: Mapping[str, str] | None = None,
    group: int | None = None,
    seed: int | None = None,
    tokenizer: Any | None = None,
) -> EpisodeRecord:
    """One :class:`EpisodeRecord` for a run: its segments and breaks, the last segment's token fields at the
    top, the last call's chat (its reply included) as ``messages``.

    A run with an ``infra_error`` is ``truncated`` (its reward is not a score). ``len(record.segments)`` and
    ``record.breaks`` say how the run's calls were split. ``tokenizer``: as in :func:`build_segments`.
    """
    calls = [_as_call(c) for c in calls]
    segments, breaks = build_segments(calls, tokenizer=tokenizer)
    chat = [c for c in calls if c.kind == "chat"]
    last = segments[-1] if segments else {}
    failed = infra_error is not None
    # The record is built by the episode engine's trace, like every other record.
    trace = EpisodeTrace(
        env_id,
        policy,
        seed=seed,
        group=group,
        task_id=str(task_id),
        describe=lambda: (dict(task_row or {}), dict(versions or {})),
        info={
            "messages": [*chat[-1].request.get("messages", []), chat[-1].response] if chat else [],
            "turn": len(calls),
        },
        prompt_ids=last.get("prompt_ids"),
        completion_ids=list(last.get("completion_ids") or []),
        completion_mask=list(last.get("completion_mask") or []),
        completion_logprobs=list(last.get("completion_logprobs") or []),
        finish_reasons=list(last.get("finish_reasons") or []),
        step_rewards=[] if failed else [float(reward)],
    )
    record = trace.record(terminated=terminated, infra_error=infra_error)
    record.duration_s, record.segments, record.breaks = duration_s, segments, breaks
    return record


def segment_records(record: EpisodeRecord) -> list[EpisodeRecord]:
    """One record per segment (each with the run's reward), for trainers that learn from every segment."""
    out = []
    for i, segment in enumerate(record.segments or []):
        fields = {k: v for k, v in segment.items() if k != "calls"}
        out.append(dataclasses.replace(record, **fields, task_id=f"{record.task_id}#{i}"))
    return out
