"""``gym-nemo serve-mcp ENV_ID``: a gym_nemo env's tools served over MCP (stdio), for any MCP client.

One env backs the server; each ``tools/call`` is a turn of its episode (the same path as a policy's tool
call: arguments validated against the tool's schema, sandbox sessions kept between calls, so variables
defined in one ``execute_python`` call are there in the next). When the episode ends (turn limit) the next
call starts a new one. An infrastructure failure comes back as an error result naming it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import gymnasium as gym

import gym_nemo

#: Turns one MCP connection may use before the env starts a fresh episode.
MAX_TURNS = 100_000


class EnvTools:
    """The env behind the server: its tool schemas and one call per turn."""

    def __init__(self, env_id: str, env_kwargs: dict[str, Any]) -> None:
        self.env = gym.make(env_id, **{"max_turns": MAX_TURNS, "max_episode_steps": MAX_TURNS, **env_kwargs})
        self.env.reset(seed=0)
        self.schemas = [t["function"] for t in self.env.unwrapped.tools]
        self._done = False

    def call(self, name: str, arguments: dict[str, Any]) -> tuple[str, bool]:
        """Run one tool call as a turn; returns the text and whether it is an error."""
        if self._done:
            self.env.reset()
            self._done = False
        action = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
        observation, _, terminated, truncated, info = self.env.step(action)
        self._done = terminated or truncated
        failed = info.get("infra_error") is not None or observation.startswith("[error]")
        return observation, failed


async def serve_stdio(env_id: str, env_kwargs: dict[str, Any]) -> None:
    """Serve ``env_id``'s tools over stdio until the client closes the stream."""
    from mcp import types
    from mcp.server.lowlevel import Server
    from mcp.server.stdio import stdio_server

    tools = EnvTools(env_id, env_kwargs)
    lock = asyncio.Lock()  # one env: calls are turns, one at a time

    async def list_tools(_: Any, __: Any) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[
                types.Tool(name=s["name"], description=s.get("description", ""), input_schema=s["parameters"])
                for s in tools.schemas
            ]
        )

    async def call_tool(_: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        async with lock:
            text, failed = await asyncio.to_thread(tools.call, params.name, dict(params.arguments or {}))
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=failed)

    server = Server(
        f"gym-nemo {env_id}", version=gym_nemo.__version__, on_list_tools=list_tools, on_call_tool=call_tool
    )
    try:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
    finally:
        tools.env.close()
