"""Policies: what turns observations into actions. ``ReferencePolicy`` is the embedded default (no model);
``make_policy(kind, **opts)`` builds any of them from its kind."""

from typing import Any

from gym_nemo.policies.base import TextPolicy
from gym_nemo.policies.factory import LAZY_CLASSES, POLICY_KINDS, make_policy, policy_class
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
    "policy_class",
]


def __getattr__(name: str) -> Any:
    # HFPolicy (torch), OpenAIPolicy (the openai client), VLLMPolicy (vllm): imported only when asked for.
    if name in LAZY_CLASSES:
        return policy_class(LAZY_CLASSES[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
