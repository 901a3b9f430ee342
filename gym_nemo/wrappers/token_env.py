"""``TokenEnv``: a text env seen through a tokenizer and its chat template, so trainers get exact tokens.

Observations and actions are token-id sequences (``Sequence(Discrete(V), stack=True)``: 1-D int64
arrays). ``reset`` returns the prompt: the chat template applied to ``info["messages"]`` (with
``info["tools"]``) and the generation prompt. ``step(ids)`` takes the policy's ids verbatim, decodes them
(``skip_special_tokens=False``) and passes the text, minus a trailing end-of-turn token, to the text env as
the assistant message; it returns only the ids the env adds: the end of the assistant turn (including the
end-of-turn token when the policy did not generate one: a truncated generation), the tool/user
message(s), and the next generation prompt (or nothing more when the episode ends).

The delta each step is computed from rendered text, never by re-tokenizing the action:

1. ``emitted`` is the text of every id so far (prompt + earlier actions and deltas) plus this action's
   decoded text. If the template's rendering of the new message list (``add_generation_prompt`` unless the
   episode ended) starts with ``emitted``, the delta is the rest of that rendering. For templates that
   keep history this is always the case, so ``decode(obs_0 + act_0 + obs_1 + ...)`` equals the template
   applied to the final messages.
2. Otherwise the template rewrote something already emitted (dropped earlier reasoning, trimmed the
   content, ...). The delta is then rendered against a fixed base: ``base = prompt messages + [assistant
   "<sentinel>"]``; the assistant turn's closing text is what follows the sentinel in ``render(base)``
   (less the end-of-turn token if the policy generated it), and the new messages' text is
   ``render(base + new messages)`` after ``render(base)``. Each prompt is then exactly the previous prompt
   + the action ids + the delta (the prefix property), and the delta is the template's rendering of the
   new messages. If even that rendering is not an extension of ``render(base)``, ``step`` raises.

The delta text is tokenized on its own (``add_special_tokens=False``), so template special tokens come
out as their single ids. ``info["token_ids"]`` and ``info["loss_mask"]`` hold the whole episode so far
(1 = a policy token, 0 = prompt/env token); ``info["action_text"]`` is what the text env received and
``info["generation_truncated"]`` whether the policy stopped without an end-of-turn token.

Notes: only what the text env records in ``info["messages"]`` reaches the token stream; ``TextEnv``
records every reply it observes (tool results, feedback, and its errors for empty or oversized messages).
Decoding is byte-level, so ids that end inside a UTF-8 character decode to U+FFFD in the text the env
sees; the concatenated stream decodes the same way because every delta starts with a special token or
ASCII.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

_SENTINEL = "\x00gym-nemo-sentinel\x00"


class TokenEnv(gym.Wrapper):
    """Token-id observations and actions over a text env (see the module docstring for the contract).

    Args:
        env: a text env following the TextEnv contract (``info["messages"]``, ``info["tools"]`` on reset).
        tokenizer: a ``transformers`` tokenizer (fast tokenizers recommended).
        chat_template: overrides the tokenizer's chat template.
        end_of_turn: the token text that ends an assistant message; default ``tokenizer.eos_token``.
        pass_tools: give the env's tool schemas to the template (``tools=``); the env's system prompt
            already describes them in text, so set False for templates that would list them twice.
        template_kwargs: extra variables for the template (e.g. ``{"enable_thinking": False}``).

    Examples:
        >>> import gymnasium as gym, gym_nemo
        >>> from gym_nemo.testing.tiny_model import build_tokenizer
        >>> from gym_nemo.wrappers import TokenEnv
        >>> tok = build_tokenizer("chatml")  # the offline test tokenizer: a real transformers tokenizer
        >>> env = TokenEnv(gym.make("nemo/TargetChar-v0"), tok)
        >>> prompt, info = env.reset(options={"task_id": "target-char/a"})
        >>> print(tok.decode(prompt))
        <|im_start|>system
        You are a helpful assistant.<|im_end|>
        <|im_start|>user
        Reply with the letter a repeated, nothing else.<|im_end|>
        <|im_start|>assistant
        <BLANKLINE>
        >>> action = tok.encode("aaaa", add_special_tokens=False) + [tok.eos_token_id]
        >>> delta, reward, terminated, truncated, info = env.step(action)
        >>> reward, terminated, tok.decode(delta)  # the env's ids: here only the turn's closing newline
        (1.0, True, '\\n')
        >>> info["token_ids"][len(prompt):] == action + delta.tolist()  # the policy's ids, verbatim
        True
        >>> info["loss_mask"][len(prompt):]  # 1 = a policy token (trained on), 0 = prompt or env token
        [1, 1, 1, 0]
        >>> tok.decode(info["token_ids"]) == tok.apply_chat_template(info["messages"], tokenize=False)
        True
    """

    def __init__(
        self,
        env: gym.Env,
        tokenizer: Any,
        chat_template: str | None = None,
        *,
        end_of_turn: str | None = None,
        pass_tools: bool = True,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(env)
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.pass_tools = pass_tools
        self.template_kwargs = dict(template_kwargs or {})
        self.end_of_turn = end_of_turn if end_of_turn is not None else tokenizer.eos_token
        if not self.end_of_turn:
            raise ValueError("the tokenizer has no eos_token; pass end_of_turn=")
        self.end_of_turn_ids = self._encode(self.end_of_turn)
        self.vocab_size = len(tokenizer)
        token_space = spaces.Sequence(spaces.Discrete(self.vocab_size), stack=True)
        self.observation_space = token_space
        self.action_space = spaces.Sequence(spaces.Discrete(self.vocab_size), stack=True)
        self._tools: list[dict[str, Any]] | None = None
        self._prompt_messages: list[dict[str, Any]] = []
        self._text = ""
        self._ids: list[int] = []
        self._mask: list[int] = []

    # ------------------------------------------------------------------ rendering
    def render_messages(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool) -> str:
        """The chat template applied to ``messages`` (with the episode's tools), as text."""
        return self.tokenizer.apply_chat_template(
            [dict(m) for m in messages],
            tools=self._tools,
            chat_template=self.chat_template,
            add_generation_prompt=add_generation_prompt,
            tokenize=False,
            **self.template_kwargs,
        )

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    # ------------------------------------------------------------------ gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        _, info = self.env.reset(seed=seed, options=options)
        tools = info.get("tools") or None
        self._tools = [dict(t) for t in tools] if (tools and self.pass_tools) else None
        self._prompt_messages = [dict(m) for m in info["messages"]]
        self._text = self.render_messages(self._prompt_messages, add_generation_prompt=True)
        self._ids = self._encode(self._text)
        self._mask = [0] * len(self._ids)
        info = dict(info, token_ids=list(self._ids), loss_mask=list(self._mask))
        return np.asarray(self._ids, dtype=np.int64), info

    def step(self, action: Iterable[int]) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        ids = [int(i) for i in np.asarray(action, dtype=np.int64).reshape(-1)] if action is not None else []
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"action ids out of range [0, {self.vocab_size}): {bad[:5]}")
        eot = self.end_of_turn_ids
        ended = len(ids) >= len(eot) > 0 and ids[len(ids) - len(eot) :] == eot
        body = ids[: len(ids) - len(eot)] if ended else ids
        content = self._decode(body)
        _, reward, terminated, truncated, info = self.env.step(content)
        messages = [dict(m) for m in info["messages"]]
        done = bool(terminated or truncated)

        action_text = content + (self.end_of_turn if ended else "")
        delta = self._delta(messages, action_text, ended=ended, done=done)
        delta_ids = self._encode(delta)
        self._text += action_text + delta
        self._ids += ids + delta_ids
        self._mask += [1] * len(ids) + [0] * len(delta_ids)
        info = dict(
            info,
            token_ids=list(self._ids),
            loss_mask=list(self._mask),
            action_text=content,
            generation_truncated=not ended,
        )
        return np.asarray(delta_ids, dtype=np.int64), reward, terminated, truncated, info

    # ------------------------------------------------------------------ the delta
    def _delta(self, messages: list[dict[str, Any]], action_text: str, *, ended: bool, done: bool) -> str:
        emitted = self._text + action_text
        full = self.render_messages(messages, add_generation_prompt=not done)
        if full.startswith(emitted):
            return full[len(emitted) :]
        # The template rewrote emitted text: render the new messages against a fixed base.
        assistant_at = _last_assistant_before(messages, len(self._prompt_messages))
        new_messages = messages[assistant_at + 1 :]
        base = [*self._prompt_messages, {"role": "assistant", "content": _SENTINEL}]
        opened = self.render_messages(self._prompt_messages, add_generation_prompt=True)
        rendered_base = self.render_messages(base, add_generation_prompt=False)
        if not rendered_base.startswith(opened + _SENTINEL):
            raise ValueError("the chat template does not render an assistant message after its generation prompt")
        closing = rendered_base[len(opened) + len(_SENTINEL) :]
        if ended:
            if not closing.startswith(self.end_of_turn):
                raise ValueError(f"the chat template does not end assistant messages with {self.end_of_turn!r}")
            closing = closing[len(self.end_of_turn) :]
        rendered_new = self.render_messages([*base, *new_messages], add_generation_prompt=not done)
        if not rendered_new.startswith(rendered_base):
            raise ValueError("the chat template's rendering of new messages depends on earlier ones")
        return closing + rendered_new[len(rendered_base) :]


def _last_assistant_before(messages: Sequence[Mapping[str, Any]], start: int) -> int:
    """Index of the last assistant message (the one this step added); the env appends after it."""
    for i in range(len(messages) - 1, start - 1, -1):
        if messages[i].get("role") == "assistant":
            return i
    raise ValueError("the env's messages have no assistant message after the prompt")
