"""The ``Sandbox`` protocol every backend implements, and what a run returns."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Limits:
    """Resource limits for one run. ``timeout_s`` is wall time; CPU time is capped just above it."""

    timeout_s: float = 10.0
    memory_mb: int = 1024  # address space
    max_output_bytes: int = 1 << 20  # per stream; the process is killed once it prints past this
    max_file_mb: int = 16
    max_open_files: int = 64
    max_processes: int = 64


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one run. Exactly what happened, with a flag for every limit that was hit.

    ``infra_error`` is set when the sandbox itself failed (could not start, died): the code's own
    failures show up as ``exit_code``/``stderr`` instead.
    """

    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    timed_out: bool = False
    duration_s: float = 0.0
    output_truncated: bool = False
    memory_exceeded: bool = False
    cpu_time_exceeded: bool = False
    file_size_exceeded: bool = False
    infra_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and self.infra_error is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Sandbox(Protocol):
    """Runs untrusted code. Backends: ``local`` (embedded default) and ``docker``."""

    name: str

    def run(
        self,
        code: str,
        *,
        language: str = "python",
        stdin: str = "",
        timeout: float | None = None,
        memory_mb: int | None = None,
    ) -> ExecResult:
        """Run ``code`` once in a fresh scratch directory and return what happened."""
        ...

    def enforced(self) -> dict[str, bool]:
        """Which protections this backend actually enforces on this host (name -> enforced)."""
        ...

    @property
    def version(self) -> str:
        """What rollout records name as the sandbox (backend, mode, image digest)."""
        ...

    def session(self, *, timeout: float | None = None, memory_mb: int | None = None) -> Session:
        """A stateful Python session for one episode (variables persist across its ``run`` calls)."""
        ...

    def close(self) -> None:
        """Release every process and file the sandbox holds."""
        ...


@runtime_checkable
class Session(Protocol):
    """A stateful interpreter: ``run`` calls share variables and scratch files until ``close``."""

    def run(
        self, code: str, *, stdin: str = "", timeout: float | None = None, memory_mb: int | None = None
    ) -> ExecResult: ...

    def close(self) -> None: ...

    def __enter__(self) -> Session: ...

    def __exit__(self, *exc: object) -> None: ...


class SandboxRequirementError(RuntimeError):
    """The sandbox cannot enforce a protection the caller demanded (``require=...``)."""


def check_requirements(sandbox: Sandbox, require: Iterable[str]) -> None:
    """Raise :class:`SandboxRequirementError` naming every required protection ``sandbox`` lacks."""
    wanted = list(require)
    if not wanted:
        return
    enforced = sandbox.enforced()
    unknown = [r for r in wanted if r not in enforced]
    if unknown:
        raise ValueError(f"unknown protections {unknown}; known: {sorted(enforced)}")
    missing = [r for r in wanted if not enforced[r]]
    if missing:
        raise SandboxRequirementError(
            f"the {sandbox.name!r} sandbox does not enforce {', '.join(missing)} on this host; "
            "use a stronger backend (e.g. docker) or run where it can (root for namespaces)"
        )
