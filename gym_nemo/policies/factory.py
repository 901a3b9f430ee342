"""``make_policy``: a policy built from its kind, the one place the CLI and ``gym-nemo eval`` do it.

>>> make_policy("gpt")
Traceback (most recent call last):
ValueError: unknown policy 'gpt'; available: reference, openai, hf, vllm
"""

from __future__ import annotations

from typing import Any

from gym_nemo.core.errors import ensure_installed
from gym_nemo.policies.base import TextPolicy
from gym_nemo.policies.reference import ReferencePolicy
from gym_nemo.policies.token import TokenPolicy

#: The kinds :func:`make_policy` builds: text-level (``reference``, ``openai``) and token-level (``hf``, ``vllm``).
POLICY_KINDS = ("reference", "openai", "hf", "vllm")
TOKEN_POLICY_KINDS = ("hf", "vllm")


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
    if kind == "openai":
        ensure_installed("openai", what="OpenAIPolicy", extra="judge")
        from gym_nemo.policies.openai import OpenAIPolicy

        return OpenAIPolicy(str(model), **opts)
    if kind == "hf":
        for module in ("torch", "transformers"):
            ensure_installed(module, what="HFPolicy", extra="hf")
        from gym_nemo.policies.hf import HFPolicy

        return HFPolicy(model, **opts)
    ensure_installed("vllm", what="VLLMPolicy", extra="vllm")
    from gym_nemo.policies.vllm import VLLMPolicy

    return VLLMPolicy(model, **opts)
