"""Policies: what turns observations into actions. ``ReferencePolicy`` is the embedded default (no model)."""

from gym_nemo.policies.base import TextPolicy
from gym_nemo.policies.reference import ReferencePolicy

__all__ = ["ReferencePolicy", "TextPolicy"]
