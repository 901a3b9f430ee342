"""Sandboxes for model-written code. ``get_sandbox()`` picks the backend (argument, then
``GYM_NEMO_SANDBOX``, then ``local``)."""

from __future__ import annotations

import os
from typing import Any

from gym_nemo.sandbox.base import ExecResult, Limits, Sandbox
from gym_nemo.sandbox.local import LocalSandbox

BACKENDS = ("local",)


def get_sandbox(backend: str | Sandbox | None = None, **kwargs: Any) -> Sandbox:
    """Return a sandbox: an instance passes through; a name selects a backend."""
    if backend is not None and not isinstance(backend, str):
        return backend
    name = backend or os.environ.get("GYM_NEMO_SANDBOX") or "local"
    if name == "local":
        return LocalSandbox(**kwargs)
    raise ValueError(f"unknown sandbox backend {name!r}; available: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "ExecResult", "Limits", "LocalSandbox", "Sandbox", "get_sandbox"]
