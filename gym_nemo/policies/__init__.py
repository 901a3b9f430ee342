"""Policies: what turns observations into actions. ``ReferencePolicy`` is the embedded default (no model);
``make_policy(kind, **opts)`` builds any of them from its kind."""

from typing import Any

from gym_nemo.policies.base import TextPolicy
from gym_nemo.policies.factory import POLICY_KINDS, make_policy
from gym_nemo.policies.reference import ReferencePolicy
from gym_nemo.policies.token import Generation, SamplingParams, TokenPolicy

__all__ = [
    "POLICY_KINDS",
    "Generation",
    "HFPolicy",
    "OpenAIPolicy",
    "ReferencePolicy",
    "SamplingParams",
    "TextPolicy",
    "TokenPolicy",
    "VLLMPolicy",
    "make_policy",
]


def __getattr__(name: str) -> Any:
    if name == "HFPolicy":  # imports torch: only when asked for (the [hf] extra)
        from gym_nemo.policies.hf import HFPolicy

        return HFPolicy
    if name == "OpenAIPolicy":  # imports the openai client: only when asked for (the [judge] extra)
        from gym_nemo.policies.openai import OpenAIPolicy

        return OpenAIPolicy
    if name == "VLLMPolicy":  # imports vllm: only when asked for (the [vllm] extra)
        from gym_nemo.policies.vllm import VLLMPolicy

        return VLLMPolicy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
