"""Sandboxes for model-written code.

``get_sandbox()`` picks the backend (argument, then ``GYM_NEMO_SANDBOX``, then ``local``) and refuses one
that lacks a protection named in ``require``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from gym_nemo.sandbox.base import (
    ExecResult,
    Limits,
    Sandbox,
    SandboxRequirementError,
    Session,
    check_requirements,
)
from gym_nemo.sandbox.local import LocalSandbox

BACKENDS = ("local", "docker")


def get_sandbox(backend: str | Sandbox | None = None, *, require: Iterable[str] = (), **kwargs: Any) -> Sandbox:
    """Return a sandbox: an instance passes through; a name selects a backend.

    ``require`` names protections from ``sandbox.enforced()`` (e.g. ``("no_network", "seccomp")``) that
    must hold, or :class:`SandboxRequirementError` is raised instead of running code in a weaker sandbox.

    Examples:
        >>> from gym_nemo.sandbox import get_sandbox
        >>> sandbox = get_sandbox("local", require=("seccomp",))
        >>> result = sandbox.run("print(6 * 7)", timeout=10)
        >>> result.stdout, result.exit_code, result.timed_out
        ('42\\n', 0, False)
        >>> sandbox.run("while True: pass", timeout=0.5).timed_out
        True
        >>> with sandbox.session() as session:  # a stateful interpreter: variables persist across runs
        ...     _ = session.run("x = 6 * 7")
        ...     session.run("print(x)").stdout
        '42\\n'
    """
    if backend is not None and not isinstance(backend, str):
        sandbox = backend
    else:
        name = backend or os.environ.get("GYM_NEMO_SANDBOX") or "local"
        if name == "local":
            sandbox = LocalSandbox(**kwargs)
        elif name == "docker":
            from gym_nemo.sandbox.docker import DockerSandbox

            sandbox = DockerSandbox(**kwargs)
        else:
            raise ValueError(f"unknown sandbox backend {name!r}; available: {', '.join(BACKENDS)}")
    check_requirements(sandbox, require)
    return sandbox


__all__ = [
    "BACKENDS",
    "ExecResult",
    "Limits",
    "LocalSandbox",
    "Sandbox",
    "SandboxRequirementError",
    "Session",
    "get_sandbox",
]
