"""The token-level policy protocol: a batch of prompt token ids in, generated ids with their logprobs out.

Every backend (HF transformers, vLLM, an OpenAI-compatible server) implements ``generate`` so rollout code
and trainers can swap them. Ids go in and come out verbatim: nothing is re-tokenized, so the ids a trainer
scores are the ids the policy sampled (see ``gym_nemo.wrappers.TokenEnv``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``temperature == 0`` is greedy; ``top_k == 0`` and ``top_p == 1`` are off.

    ``stop_token_ids`` end a generation (the stop token is kept in the ids, ``finish_reason="stop"``);
    ``None`` means the backend's default (the model's end-of-turn / eos token).
    """

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop_token_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError("need temperature >= 0, 0 < top_p <= 1, top_k >= 0")


@dataclass
class Generation:
    """One sampled continuation.

    ``token_ids`` are the generated ids, a final stop token included; ``logprobs[i]`` is the model's
    log-probability of ``token_ids[i]`` given the prompt and the earlier ids (raw model distribution:
    before temperature, top-k or top-p, as vLLM reports them); ``text`` decodes the ids without the
    final stop token.
    """

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: FinishReason
    text: str = ""
    prompt_ids: list[int] = field(default_factory=list, repr=False)
    #: The policy's weight version that generated this (``policy.version``; None for backends without weight sync).
    policy_version: int | None = None

    @classmethod
    def from_server(
        cls, token_ids: Sequence[int], logprobs: Sequence[float] | None, stop_token_ids: Sequence[int]
    ) -> Generation:
        """A generation from an inference server's raw output (ids, logprobs or None: 0.0 each); it finished
        with ``"stop"`` iff its last id is a stop id."""
        ids = [int(t) for t in token_ids]
        finish: FinishReason = "stop" if ids and ids[-1] in set(stop_token_ids) else "length"
        return cls(ids, [float(x) for x in logprobs] if logprobs is not None else [0.0] * len(ids), finish)


@runtime_checkable
class TokenPolicy(Protocol):
    """Generates continuations for a batch of token-id prompts; ``len(result) == len(prompts)``."""

    name: str

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Generation]: ...
