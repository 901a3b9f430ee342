"""Envs whose policy may run code: the sandbox set-up they share, and the stateful ``execute_python`` tool.

:class:`SandboxEnv` opens the sandbox (backend, required protections, limits) and closes it with the env
(CompCoding-v0). :class:`PythonToolEnv` adds ``execute_python`` over one sandbox session per episode
(CodeExec-v0, MathTool-v0, and any env that wants a stateful Python tool): variables and scratch files persist
across the calls of one episode, each episode starts from a fresh interpreter, and the verifier's hidden data
never enters the session.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gym_nemo.core.env import TextEnv
from gym_nemo.core.errors import InfraError
from gym_nemo.core.tools import Tool
from gym_nemo.sandbox import ExecResult, Sandbox, Session, get_sandbox


def format_exec_result(result: ExecResult, limit: int) -> str:
    """A tool reply: exit status, then stdout and stderr, each cut to ``limit`` characters."""

    def cut(text: str) -> str:
        return text if len(text) <= limit else f"{text[:limit]}\n[... {len(text) - limit:,} more characters cut]"

    if result.timed_out:
        status = "timed out (the process was killed)"
    elif result.output_truncated:
        status = "killed: output limit exceeded"
    else:
        status = f"exit code {result.exit_code}"
    parts = [status]
    if result.memory_exceeded:
        parts.append("memory limit exceeded")
    if result.file_size_exceeded:
        parts.append("file size limit exceeded")
    if result.cpu_time_exceeded:
        parts.append("CPU time limit exceeded")
    text = "; ".join(parts)
    text += f"\nstdout:\n{cut(result.stdout)}" if result.stdout else "\nstdout: (empty)"
    if result.stderr:
        text += f"\nstderr:\n{cut(result.stderr)}"
    return text


class PythonSessionTool:
    """The ``execute_python`` tool over a sandbox session that lives for one episode.

    Call :meth:`new_episode` on reset and :meth:`close` when the env closes.
    """

    def __init__(self, sandbox: Sandbox, *, timeout_s: float, memory_mb: int, output_chars: int) -> None:
        self.sandbox = sandbox
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.output_chars = output_chars
        self._session: Session | None = None

    def tool(self) -> Tool:
        return Tool(
            name="execute_python",
            description=(
                "Run Python 3 code in a sandboxed interpreter and return its exit status, stdout and stderr "
                f"(each cut to {self.output_chars} characters). Variables and files persist between calls in "
                f"this episode. Standard library only, no network, {self.timeout_s:g} s time limit per call."
            ),
            parameters={
                "type": "object",
                "properties": {"code": {"type": "string", "description": "The Python source to run."}},
                "required": ["code"],
                "additionalProperties": False,
            },
            fn=self.execute,
        )

    def execute(self, code: str) -> str:
        if self._session is None:
            self._session = self.sandbox.session(timeout=self.timeout_s, memory_mb=self.memory_mb)
        result = self._session.run(code, timeout=self.timeout_s, memory_mb=self.memory_mb)
        if result.infra_error is not None:
            raise InfraError(f"sandbox: {result.infra_error}")
        return format_exec_result(result, self.output_chars)

    def new_episode(self) -> None:
        """Drop the session; the next call starts a fresh interpreter."""
        if self._session is not None:
            session, self._session = self._session, None
            session.close()

    def close(self) -> None:
        self.new_episode()
        self.sandbox.close()


class SandboxEnv(TextEnv):
    """A :class:`TextEnv` that runs the policy's code in a sandbox; subclasses verify and offer tools with it.

    Args (beyond :class:`TextEnv`'s):
        sandbox: a backend name (``"local"``, ``"docker"``) or a ``Sandbox``; default ``GYM_NEMO_SANDBOX``.
        sandbox_require: protections the sandbox must enforce (e.g. ``("no_network",)``), else construction
            fails with ``SandboxRequirementError`` instead of running code in a weaker sandbox.
        timeout_s: wall-time limit of each tool run and of the verification run.
        memory_mb: address-space limit of each run.
        tool_output_chars: stdout and stderr shown to the policy are each cut to this many characters.
    """

    def __init__(
        self,
        *,
        sandbox: str | Sandbox | None = None,
        sandbox_require: Sequence[str] = (),
        timeout_s: float = 10.0,
        memory_mb: int = 1024,
        tool_output_chars: int = 4_000,
        **kwargs: Any,
    ) -> None:
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.tool_output_chars = tool_output_chars
        self.sandbox = get_sandbox(sandbox, require=sandbox_require)
        super().__init__(**kwargs)

    def close(self) -> None:
        self.sandbox.close()
        super().close()


class PythonToolEnv(SandboxEnv):
    """A :class:`SandboxEnv` whose policy has ``execute_python``: a stateful session per episode, opened on
    first use and dropped on the next reset or close."""

    python: PythonSessionTool

    def make_tools(self) -> Sequence[Tool]:
        # Called once, by TextEnv.__init__ (after SandboxEnv opened the sandbox).
        self.python = PythonSessionTool(
            self.sandbox, timeout_s=self.timeout_s, memory_mb=self.memory_mb, output_chars=self.tool_output_chars
        )
        return [self.python.tool()]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        self.python.new_episode()  # every episode starts from a fresh interpreter
        return super().reset(seed=seed, options=options)

    def close(self) -> None:
        self.python.new_episode()
        super().close()
