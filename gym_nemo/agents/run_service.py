"""Serve a workflow as a NeMo Gym-style agent endpoint: ``POST /run``.

    python -m gym_nemo.agents.run_service pkg.mod:func [--host 127.0.0.1] [--port 0]

The body is the task row plus ``"base_url"`` (the OpenAI base URL the run's LLM calls must use, a gateway
run's); the reply is the row with ``"reward"`` and ``"response"`` (what the workflow returned besides its
reward, when it returns a mapping). A workflow that fails answers ``500`` with ``{"error": ...}``; a body
without ``base_url`` ``400``. Runs execute on a thread pool, so many run at once. This is the shape
``nemo/AgentWorkflow-v0`` (``workflow="http://..."``) and the endpoint rollout source call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from gym_nemo.agents.workflows import Workflow, resolve_workflow, run_workflow


def run_app(workflow: Workflow | str) -> FastAPI:
    """The ASGI app serving ``workflow`` at ``POST /run``."""
    func = resolve_workflow(workflow)
    app = FastAPI(title="gym_nemo agent /run", docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/run")
    async def run(request: Request) -> JSONResponse:
        try:
            row = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return JSONResponse({"error": f"the body is not valid JSON: {exc}"}, 400)
        if not isinstance(row, dict) or not isinstance(row.get("base_url"), str):
            return JSONResponse({"error": 'the body must be a task row with a string "base_url"'}, 400)
        base_url = row.pop("base_url")
        extra: dict[str, Any] = {}

        def call(task: dict[str, Any], url: str) -> Any:
            result = func(task, url)
            if isinstance(result, dict):
                extra.update(result)
            return result

        try:
            reward = await asyncio.get_running_loop().run_in_executor(None, run_workflow, call, row, base_url)
        except Exception as exc:
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, 500)
        return JSONResponse({**row, "response": extra.get("response"), "reward": reward})

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workflow", help="pkg.mod:func")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    config = uvicorn.Config(run_app(args.workflow), host=args.host, port=args.port, log_level="warning")
    server = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            print(f"listening on http://{args.host}:{server.servers[0].sockets[0].getsockname()[1]}", flush=True)
        await task

    asyncio.run(serve())


if __name__ == "__main__":
    main()
