"""``make_policy``: a policy built from its kind, the one place the CLI and ``gym-nemo eval`` do it.

>>> make_policy("gpt")
Traceback (most recent call last):
ValueError: unknown policy 'gpt'; available: reference, openai, hf, vllm
"""

from __future__ import annotations

import importlib
from typing import Any

from gym_nemo.core.errors import ensure_installed
from gym_nemo.policies.base import TextPolicy
from gym_nemo.policies.reference import ReferencePolicy
from gym_nemo.policies.token import TokenPolicy

#: The kinds :func:`make_policy` builds: text-level (``reference``, ``openai``) and token-level (``hf``, ``vllm``).
POLICY_KINDS = ("reference", "openai", "hf", "vllm")

# The model-backed kinds: (module, class, the packages it needs, the pyproject extra that provides them). Their
# modules import heavy packages, so they are imported only when asked for.
_MODEL_POLICIES = {
    "openai": ("gym_nemo.policies.openai", "OpenAIPolicy", ("openai",), "judge"),
    "hf": ("gym_nemo.policies.hf", "HFPolicy", ("torch", "transformers"), "hf"),
    "vllm": ("gym_nemo.policies.vllm", "VLLMPolicy", ("vllm",), "vllm"),
}
#: Class name -> kind, for ``from gym_nemo.policies import HFPolicy``.
LAZY_CLASSES = {name: kind for kind, (_, name, _, _) in _MODEL_POLICIES.items()}


def policy_class(kind: str) -> type:
    """The class of a model-backed ``kind``, imported now; :class:`~gym_nemo.core.errors.MissingDependency`
    (naming the extra) when what it needs is not installed."""
    module, name, needs, extra = _MODEL_POLICIES[kind]
    for package in needs:
        ensure_installed(package, what=name, extra=extra)
    return getattr(importlib.import_module(module), name)


def make_policy(kind: str, **opts: Any) -> TextPolicy | TokenPolicy:
    """A policy of ``kind``, built with the keyword options that kind's class takes.

    * ``"reference"``: :class:`ReferencePolicy` (no model); ``tasks=`` the env's task pool, ``corrupt_rate``,
      ``seed``, ``use_tools``.
    * ``"openai"``: :class:`~gym_nemo.policies.openai.OpenAIPolicy` (the ``[judge]`` extra); ``model=`` the
      served name, ``base_url``, ``client``, sampling options.
    * ``"hf"``: :class:`~gym_nemo.policies.hf.HFPolicy` (the ``[hf]`` extra); ``model=`` a directory or hub id,
      ``device``, ``dtype``, ``max_batch_size``.
    * ``"vllm"``: :class:`~gym_nemo.policies.vllm.VLLMPolicy` (the ``[vllm]`` extra); ``model=``, engine options.

    Raises ``ValueError`` for an unknown kind or a missing ``model``/``tasks``, and
    :class:`~gym_nemo.core.errors.MissingDependency` when the kind's extra is not installed.
    """
    if kind not in POLICY_KINDS:
        raise ValueError(f"unknown policy {kind!r}; available: {', '.join(POLICY_KINDS)}")
    if kind == "reference":
        if opts.get("tasks") is None:
            raise ValueError("the reference policy needs tasks= (the env's task pool, env.unwrapped.tasks)")
        return ReferencePolicy(opts.pop("tasks"), **opts)
    model = opts.pop("model", None)
    if not model:
        raise ValueError(f"policy {kind!r} needs model=")
    return policy_class(kind)(model, **opts)
