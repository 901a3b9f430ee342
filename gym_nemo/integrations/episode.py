"""One token-level episode driven by an async ``generate``: the trainer-independent core of the agent-loop adapters.

``play_token_episode`` resets a :class:`~gym_nemo.wrappers.TokenEnv` on a task, then alternates ``await
generate(context_ids)`` (the trainer's inference server: verl's ``server_manager``, an engine, a policy) and
``env.step(ids)`` (in a worker thread, so concurrent episodes overlap) until the episode ends or the response
budget is spent. The result is what agent-loop trainers want: the prompt ids, the response ids (policy tokens
and the env's tokens of later turns, verbatim), a mask (1 = policy token), the sampling logprobs (0.0 on env
tokens), the per-step rewards and the infra error if the env reported one. Env tokens after the last policy
token are left out (they carry no training signal).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gym_nemo.wrappers.token_env import TokenEnv

#: ``await generate(context_ids) -> (token_ids, logprobs or None)``.
AsyncGenerate = Callable[[list[int]], Awaitable[tuple[Sequence[int], Sequence[float] | None]]]


@dataclass
class TokenEpisode:
    """A finished (or budget-cut) token-level episode."""

    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    response_mask: list[int] = field(default_factory=list)
    response_logprobs: list[float] = field(default_factory=list)
    step_rewards: list[float] = field(default_factory=list)
    done: bool = False
    infra_error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def reward(self) -> float:
        return float(sum(self.step_rewards))

    @property
    def turns(self) -> int:
        return len(self.step_rewards)


async def play_token_episode(
    env: TokenEnv, generate: AsyncGenerate, *, task_id: str | None = None, max_response_tokens: int
) -> TokenEpisode:
    """Play one episode of ``env`` (on ``task_id`` if given) with ``generate``; see the module docstring."""
    options = {"task_id": str(task_id)} if task_id is not None else None
    obs, info = await asyncio.to_thread(env.reset, options=options)
    episode = TokenEpisode([int(t) for t in obs], info=info)
    while len(episode.response_ids) < max_response_tokens:
        ids, logprobs = await generate(episode.prompt_ids + episode.response_ids)
        ids = [int(t) for t in ids]
        episode.response_ids += ids
        episode.response_mask += [1] * len(ids)
        episode.response_logprobs += [float(x) for x in logprobs] if logprobs is not None else [0.0] * len(ids)
        delta, reward, terminated, truncated, episode.info = await asyncio.to_thread(env.step, ids)
        delta = [int(t) for t in delta]
        episode.response_ids += delta
        episode.response_mask += [0] * len(delta)
        episode.response_logprobs += [0.0] * len(delta)
        episode.step_rewards.append(float(reward))
        if episode.info.get("infra_error"):
            episode.infra_error = str(episode.info["infra_error"])
        if terminated or truncated:
            episode.done = True
            break
    last = max((i for i, m in enumerate(episode.response_mask) if m), default=-1) + 1
    del episode.response_ids[last:], episode.response_mask[last:], episode.response_logprobs[last:]
    return episode
