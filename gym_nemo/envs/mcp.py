"""``nemo/MCP-v0``: the tools of any MCP stdio server as the env's tools, with tasks and verifiers on top.

A task row names the server and how to check the outcome (all in ``verifier_metadata``, hidden from the
policy)::

    {"responses_create_params": {"input": [{"role": "user", "content": "Commit hello.txt in {workdir} ..."}]},
     "verifier_metadata": {
        "task_id": "git/commit-greeting",
        "mcp_server": {"command": "{python}", "args": ["-m", "mcp_server_git"], "env": {}},
        "workdir": {"files": {"hello.txt": "hi\\n"}, "git": true},
        "verifier": {"type": "tool_state", "tool": "git_log", "arguments": {"repo_path": "{workdir}"},
                     "contains": "add greeting"},
        "reference": ["<tool_call>...</tool_call>", "Done."]}}

- **Server.** ``command``/``args``/``env`` start the MCP server over stdio (the ``mcp`` SDK's client);
  ``{python}`` is this interpreter, so servers installed in the same environment run as ``{python} -m
  module``. The env lists the server's tools at reset and offers each as a tool with the server's own JSON
  schema (arguments are validated before the call). A server is kept across episodes while later tasks name
  it (the last ``max_servers`` started stay up) and stopped on ``close``. Servers run as ordinary child
  processes with the env's privileges: they are trusted code, not sandboxed (their tools act on the workdir
  the task gives them).
- **Workdir.** ``workdir`` gives each episode a fresh directory (the same path for every episode of one env,
  so a seed replays the same prompt): ``files`` to write, ``git: true`` to make it a repository with one
  commit. ``{workdir}`` in the prompt, the server's args and the verifier's fields is replaced by its path.
- **Verifiers** (``type``): ``contains`` (``value`` in the final answer; ``case_sensitive`` false by default),
  ``regex`` (``pattern`` searched in the final answer), ``tool_state`` (call ``tool`` with ``arguments`` at
  verification time; its output must contain ``contains``: a check on the final state the tools left),
  ``file`` (``path`` in the workdir exists and contains ``contains``), ``all`` (every one of ``checks``).
  Reward 1.0 iff the check passes.
- **Failures.** A tool that reports an error (``isError``) is the policy's problem: it sees ``[tool error]``
  and the text. A server that cannot start, dies or does not answer within ``call_timeout_s`` is an
  infrastructure error (``truncated`` with ``info["infra_error"]``).

Bundled tasks (``gym_nemo/envs/data/mcp_tasks.jsonl``) use mcp-server-time (time-zone conversions whose
answers do not depend on the date: zones without daylight saving) and mcp-server-git (on a temporary
repository); both come with the ``[serve]`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym

from gym_nemo.core.env import TextEnv
from gym_nemo.core.errors import InfraError, ensure_installed
from gym_nemo.core.task import Task, input_messages, read_jsonl
from gym_nemo.core.tools import Tool
from gym_nemo.core.verdict import Verdict
from gym_nemo.envs.datafiles import bundled_file

VERIFIER_TYPES = ("contains", "regex", "tool_state", "file", "all")


def _loop() -> asyncio.AbstractEventLoop:
    """One event loop thread per process serves every MCP connection (their stdio streams live on it)."""
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None or not _LOOP.is_running():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, daemon=True, name="gym-nemo-mcp").start()
            _LOOP = loop
        return _LOOP


_LOOP: asyncio.AbstractEventLoop | None = None
_LOOP_LOCK = threading.Lock()


class MCPConnection:
    """A running MCP stdio server and a client session to it, usable from any thread."""

    def __init__(self, spec: Mapping[str, Any], *, startup_timeout_s: float, call_timeout_s: float) -> None:
        from mcp import ClientSession, StdioServerParameters, stdio_client

        self.spec = dict(spec)
        self.call_timeout_s = call_timeout_s
        self._loop = _loop()
        self._stop: asyncio.Event | None = None
        self._ready: asyncio.Future[Any] | None = None
        self._session: Any = None
        self._broken = False
        params = StdioServerParameters(
            command=spec["command"], args=list(spec.get("args", [])), env=dict(spec.get("env") or {}) or None
        )

        async def hold() -> None:
            assert self._ready is not None
            self._stop = asyncio.Event()
            try:
                with open(os.devnull, "w") as errlog:  # the server's stderr (its logging) is not ours to show
                    async with stdio_client(params, errlog=errlog) as streams, ClientSession(*streams) as session:
                        await session.initialize()
                        listed = await session.list_tools()
                        self._session = session
                        self._ready.set_result(listed.tools)
                        await self._stop.wait()
            except BaseException as exc:
                if not self._ready.done():
                    self._ready.set_exception(exc)
            finally:
                self._session = None

        async def start() -> list[Any]:
            self._ready = asyncio.get_running_loop().create_future()
            self._task = asyncio.get_running_loop().create_task(hold())
            return await asyncio.wait_for(asyncio.shield(self._ready), startup_timeout_s)

        try:
            self.tools = asyncio.run_coroutine_threadsafe(start(), self._loop).result(startup_timeout_s + 5)
        except Exception as exc:
            self.close()
            raise InfraError(f"MCP server {_command_line(spec)} did not start: {type(exc).__name__}: {exc}") from exc

    @property
    def alive(self) -> bool:
        """Started and not known to be broken (a call that failed for infrastructure reasons breaks it)."""
        return self._session is not None and not self._broken

    def call(self, name: str, arguments: Mapping[str, Any]) -> tuple[str, bool]:
        """Call a tool; returns its text output and whether the server flagged it as an error."""
        if self._session is None:
            raise InfraError(f"MCP server {_command_line(self.spec)} is not running")
        future = asyncio.run_coroutine_threadsafe(self._session.call_tool(name, dict(arguments)), self._loop)
        try:
            result = future.result(self.call_timeout_s)
        except TimeoutError:
            future.cancel()
            self._broken = True
            raise InfraError(f"MCP tool {name!r} did not answer within {self.call_timeout_s:g} s") from None
        except Exception as exc:
            self._broken = True
            raise InfraError(f"MCP tool {name!r} failed: {type(exc).__name__}: {exc}") from exc
        parts = []
        for block in result.content or []:
            text = getattr(block, "text", None)
            parts.append(text if text is not None else json.dumps(block.model_dump(mode="json"), ensure_ascii=False))
        return "\n".join(parts), bool(result.is_error)

    def close(self) -> None:
        stop = self._stop
        if stop is not None:
            self._loop.call_soon_threadsafe(stop.set)
        task = getattr(self, "_task", None)
        if task is not None:

            async def wait() -> None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(task), 10)

            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(wait(), self._loop).result(15)
        self._session = None


def _command_line(spec: Mapping[str, Any]) -> str:
    return " ".join([str(spec.get("command")), *map(str, spec.get("args", []))])


def _substitute(value: Any, mapping: Mapping[str, str]) -> Any:
    """``{python}``/``{workdir}`` replaced in every string inside ``value``."""
    if isinstance(value, str):
        for key, replacement in mapping.items():
            value = value.replace("{" + key + "}", replacement)
        return value
    if isinstance(value, Mapping):
        return {k: _substitute(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, mapping) for v in value]
    return value


def _check_verifier(spec: Any, where: str) -> None:
    if not isinstance(spec, Mapping) or spec.get("type") not in VERIFIER_TYPES:
        raise ValueError(f"{where}: 'verifier' must be an object with 'type' in {VERIFIER_TYPES}")
    kind = spec["type"]
    needs = {"contains": ("value",), "regex": ("pattern",), "tool_state": ("tool", "contains"),
             "file": ("path", "contains"), "all": ("checks",)}[kind]  # fmt: skip
    missing = [k for k in needs if k not in spec]
    if missing:
        raise ValueError(f"{where}: a {kind!r} verifier needs {missing}")
    if kind == "regex":
        re.compile(spec["pattern"])
    if kind == "all":
        for n, check in enumerate(spec["checks"]):
            _check_verifier(check, f"{where} check {n}")


class MCPEnv(TextEnv):
    """Tasks over any MCP stdio server's tools (see the module docstring).

    Args:
        call_timeout_s: seconds one tool call may take before it is an infrastructure error.
        startup_timeout_s: seconds a server may take to start and list its tools.
        tool_output_chars: tool output longer than this is cut, with a note.
        max_servers: servers kept running for reuse by later episodes (the least recently used is stopped).
        **kwargs: ``TextEnv``'s (``data``, ``task_ids``, ``max_turns``, ...).
    """

    verifier_name = "mcp_task"
    verifier_version = "1"
    default_max_turns = 8
    default_system_prompt = "You are a helpful assistant. Use the tools to complete the task, then answer briefly."

    def __init__(
        self,
        *,
        call_timeout_s: float = 30.0,
        startup_timeout_s: float = 30.0,
        tool_output_chars: int = 4_000,
        max_servers: int = 4,
        **kwargs: Any,
    ) -> None:
        ensure_installed("mcp", what="MCPEnv", extra="serve")
        self.call_timeout_s, self.startup_timeout_s = call_timeout_s, startup_timeout_s
        self.tool_output_chars = tool_output_chars
        self.max_servers = max_servers
        self._connection: MCPConnection | None = None
        self._connections: dict[str, MCPConnection] = {}
        self._base_dir = Path(tempfile.mkdtemp(prefix="gym-nemo-mcp-"))
        self._workdir = self._base_dir / "work"
        super().__init__(**kwargs)

    # ------------------------------------------------------------------ tasks
    @classmethod
    def bundled_rows(cls) -> Sequence[Mapping[str, Any]]:
        return read_jsonl(str(bundled_file("mcp_tasks.jsonl")))

    @classmethod
    def row_to_task(cls, row: Mapping[str, Any], index: int) -> Task:
        meta = row.get("verifier_metadata")
        where = f"task row {index}"
        if not isinstance(meta, Mapping):
            raise ValueError(f"{where}: an MCP row needs 'verifier_metadata' with 'mcp_server' and 'verifier'")
        server = meta.get("mcp_server")
        if not isinstance(server, Mapping) or not isinstance(server.get("command"), str):
            raise ValueError(f"{where}: 'mcp_server' needs a 'command' string (and optional 'args', 'env')")
        if not all(isinstance(a, str) for a in server.get("args", [])):
            raise ValueError(f"{where}: 'mcp_server.args' must be a list of strings")
        _check_verifier(meta.get("verifier"), where)
        workdir = meta.get("workdir")
        if workdir is not None and not isinstance(workdir, Mapping):
            raise ValueError(f"{where}: 'workdir' must be an object ({{'files': {{...}}, 'git': true}})")
        reference = meta.get("reference")
        task_id = str(meta.get("task_id") or row.get("id") or f"mcp/{index}")
        return Task(
            task_id=task_id,
            messages=tuple(input_messages(row)),
            hidden=dict(meta),
            row=dict(row),
            reference=tuple(reference) if isinstance(reference, list) else reference,
        )

    # ------------------------------------------------------------------ episode set-up
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        gym.Env.reset(self, seed=seed)
        task = self._select_task(options or {})
        mapping = {"python": sys.executable, "workdir": str(self._workdir)}
        self._prepare_workdir(task.hidden.get("workdir"))
        self._connect(_substitute(dict(task.hidden["mcp_server"]), mapping))
        row = _substitute(dict(task.row), mapping)
        return super().reset(options={"task": row})

    def _prepare_workdir(self, spec: Mapping[str, Any] | None) -> None:
        shutil.rmtree(self._workdir, ignore_errors=True)
        self._workdir.mkdir(parents=True)
        if not spec:
            return
        for name, content in dict(spec.get("files") or {}).items():
            path = (self._workdir / name).resolve()
            if self._workdir.resolve() not in path.parents:
                raise ValueError(f"workdir file {name!r} is outside the workdir")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(str(content), encoding="utf-8")
        if spec.get("git"):
            git = ["git", "-C", str(self._workdir)]
            steps = [
                ["init", "-q", "-b", "main"],
                ["config", "user.name", "gym-nemo"],
                ["config", "user.email", "gym-nemo@localhost"],
                ["commit", "-q", "--allow-empty", "-m", "initial commit"],
            ]
            for step in steps:
                done = subprocess.run([*git, *step], capture_output=True, text=True, timeout=30)
                if done.returncode != 0:
                    raise InfraError(f"git {' '.join(step)} failed in the workdir: {done.stderr.strip()}")

    def _connect(self, spec: dict[str, Any]) -> None:
        """Use the running server for ``spec`` or start it; keep the last ``max_servers`` started alive."""
        key = json.dumps(spec, sort_keys=True)
        connection = self._connections.pop(key, None)
        if connection is not None and not connection.alive:
            connection.close()
            connection = None
        if connection is None:
            connection = MCPConnection(
                spec, startup_timeout_s=self.startup_timeout_s, call_timeout_s=self.call_timeout_s
            )
        self._connections[key] = connection  # most recently used last
        while len(self._connections) > self.max_servers:
            self._connections.pop(next(iter(self._connections))).close()
        self._connection = connection
        self._tools = {t.name: t for t in (self._as_tool(mcp_tool) for mcp_tool in connection.tools)}

    def _as_tool(self, mcp_tool: Any) -> Tool:
        name = mcp_tool.name

        def run(**arguments: Any) -> str:
            assert self._connection is not None
            text, is_error = self._connection.call(name, arguments)
            cut = len(text) - self.tool_output_chars
            if cut > 0:
                text = f"{text[: self.tool_output_chars]}\n[... {cut:,} more characters cut]"
            return f"[tool error] {text}" if is_error else text

        schema = dict(getattr(mcp_tool, "input_schema", None) or getattr(mcp_tool, "inputSchema", None) or {})
        schema.setdefault("type", "object")
        return Tool(name=name, description=mcp_tool.description or name, parameters=schema, fn=run)

    def close(self) -> None:
        self._connection = None
        while self._connections:
            self._connections.popitem()[1].close()
        shutil.rmtree(self._base_dir, ignore_errors=True)
        super().close()

    # ------------------------------------------------------------------ verification
    def verify(self, task: Task, answer: str) -> Verdict:
        spec = _substitute(dict(task.hidden["verifier"]), {"python": sys.executable, "workdir": str(self._workdir)})
        passed, reason = self._check(spec, answer)
        return Verdict(reward=float(passed), passed=passed, reason=reason, details={"verifier": spec["type"]})

    def _check(self, spec: Mapping[str, Any], answer: str) -> tuple[bool, str]:
        kind = spec["type"]
        if kind == "contains":
            value = str(spec["value"])
            found = value in answer if spec.get("case_sensitive") else value.casefold() in answer.casefold()
            return found, "the answer is right" if found else "the answer does not contain the expected result"
        if kind == "regex":
            found = re.search(spec["pattern"], answer) is not None
            return found, "the answer is right" if found else "the answer does not match the expected result"
        if kind == "tool_state":
            if self._connection is None:
                raise InfraError("no MCP server to check the final state with")
            output, is_error = self._connection.call(spec["tool"], dict(spec.get("arguments") or {}))
            ok = not is_error and str(spec["contains"]) in output
            return ok, "the final state is as required" if ok else "the final state is not as required"
        if kind == "file":
            path = (self._workdir / spec["path"]).resolve()
            ok = self._workdir.resolve() in path.parents and path.is_file()
            ok = ok and str(spec["contains"]) in path.read_text(encoding="utf-8", errors="replace")
            return ok, "the file is as required" if ok else f"{spec['path']} is missing or lacks the required content"
        results = [self._check(check, answer) for check in spec["checks"]]
        failed = [reason for ok, reason in results if not ok]
        return not failed, "; ".join(failed) or "every check passed"
