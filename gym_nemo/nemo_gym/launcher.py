"""Run one NeMo Gym resources server, without NeMo Gym's head server or Ray (executed by the NeMo Gym venv's
Python >= 3.12, never imported by gym_nemo: it must not import gym_nemo, which lives in another venv).

NeMo Gym's own launcher (``ng_run`` / ``Server.run_webserver``) fetches its configuration from a head
server and starts Ray; neither is needed to answer ``/seed_session``, tool routes and ``/verify``. So this
script builds the app the way ``run_webserver`` does, from the parts: the server's class (the
``SimpleResourcesServer`` subclass its ``app.py`` defines), its config class (the class's ``config`` field)
filled from the server's ``configs/*.yaml`` plus ``--config`` overrides, a ``ServerClient`` whose head
server is never contacted, ``setup_webserver()``; then serves it with uvicorn on a loopback port it binds
itself (port 0: no race for a free port). Its first stdout line is ``{"port": N, "pid": P}``; it also
writes that to ``--state-file``. It exits after ``--idle-exit`` seconds without requests.

Usage: ``python launcher.py --server NAME --state-file PATH [--config JSON] [--idle-exit S] [--model-url URL]``
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

HEALTH_ROUTE = "/_gym_nemo/health"

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # gym_nemo's folder is no place for a server to import its modules from


def _server_fields(server_dir: Path, name: str) -> dict:
    """The server's own fields from its first config that defines them (``x: {resources_servers: {name: {...}}}``)."""
    from omegaconf import OmegaConf

    for path in sorted((server_dir / "configs").glob("*.yaml")):
        try:
            loaded = OmegaConf.load(path)
            conf = OmegaConf.to_container(loaded, resolve=False)
        except Exception:  # a config that does not parse is skipped, the next may serve
            continue
        for key, top in conf.items() if isinstance(conf, dict) else ():
            fields = (top or {}).get("resources_servers", {}).get(name) if isinstance(top, dict) else None
            if isinstance(fields, dict):
                node = loaded[key]["resources_servers"][name]
                resolved = {}
                for field in fields:  # as run_webserver does (resolve=True): ${oc.env:VAR,default} and the like
                    try:
                        value = node[field]
                        resolved[field] = (
                            OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
                        )
                    except Exception:  # an interpolation into NeMo Gym's global config, which is not here
                        resolved[field] = fields[field]
                return resolved
    return {}


def _server_class(module, base):
    """The resources-server class ``app.py`` defines (the most derived subclass of ``base`` declared there)."""
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, base) and obj.__module__ == module.__name__
    ]
    if not found:
        raise SystemExit(f"{module.__name__} defines no {base.__name__} subclass")
    return next(c for c in found if not any(issubclass(o, c) and o is not c for o in found))


def _model_server_names(value) -> set[str]:
    """The names of the model servers a config refers to (``{"type": "responses_api_models", "name": ...}``)."""
    if isinstance(value, dict):
        found = {value["name"]} if value.get("type") == "responses_api_models" and value.get("name") else set()
        return found.union(*(_model_server_names(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_model_server_names(v) for v in value))
    return set()


def build_app(name: str, overrides: dict, port: int, model_url: str | None = None):
    """The server's FastAPI app, as ``run_webserver`` builds it minus head server, Ray and profiling.

    ``model_url`` (``http://127.0.0.1:PORT``) is where every model server the config names (an LLM judge) is
    reached: NeMo Gym's ``ServerClient`` looks servers up in its global config, which here holds just those;
    a server that asks its judge as an OpenAI API (``judge_base_url``: verifif) gets ``model_url/v1`` there."""
    import resources_servers

    server_dir = Path(next(iter(resources_servers.__path__))) / name  # a namespace package
    sys.path.insert(0, str(server_dir))  # servers import helper modules from their own folder, as ng_run allows
    os.chdir(server_dir)  # and read their data by relative paths
    from nemo_gym.base_resources_server import SimpleResourcesServer
    from nemo_gym.server_utils import BaseServerConfig, ServerClient
    from omegaconf import OmegaConf

    module = importlib.import_module(f"resources_servers.{name}.app")
    cls = _server_class(module, SimpleResourcesServer)
    config_cls = cls.model_fields["config"].annotation
    fields = {**_server_fields(server_dir, name), **overrides}
    if model_url and "judge_base_url" in config_cls.model_fields:  # servers that ask their judge as an OpenAI API
        fields.update(judge_base_url=model_url.rstrip("/") + "/v1", judge_api_key="EMPTY")
    config = config_cls.model_validate(
        {**fields, "host": "127.0.0.1", "port": port, "entrypoint": "app.py", "name": name}
    )
    models = {}
    if model_url:
        host, _, model_port = model_url.removeprefix("http://").rstrip("/").partition(":")
        address = {"host": host, "port": int(model_port)}
        models = {n: {"responses_api_models": {n: address}} for n in _model_server_names(fields)}
    client = ServerClient.model_construct(
        head_server_config=BaseServerConfig(host="127.0.0.1", port=1),  # never contacted
        global_config_dict=OmegaConf.create(models),
    )
    server = cls(config=config, server_client=client)
    app = server.setup_webserver()
    return app


def serve(argv: list[str]) -> None:
    """Serve one server (the arguments of the module docstring's usage line) until it is idle."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--state-file", required=True)
    parser.add_argument("--config", default="{}", help="JSON overrides of the server's config fields")
    parser.add_argument("--idle-exit", type=float, default=600.0)
    parser.add_argument("--model-url", default=None, help="where the model servers it names (a judge) answer")
    args = parser.parse_args(argv)

    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose proto says TCP; without
    # it a response's body waits for the client's delayed ACK of its headers (~40 ms a request on loopback)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]

    import uvicorn

    app = build_app(args.server, json.loads(args.config), port, args.model_url)
    last_request = [time.monotonic()]

    @app.middleware("http")
    async def _touch(request, call_next):
        last_request[0] = time.monotonic()
        return await call_next(request)

    @app.get(HEALTH_ROUTE)
    async def _health():
        return {"server": args.server, "pid": os.getpid()}

    config = uvicorn.Config(
        app, log_level="warning", timeout_keep_alive=60, access_log=False, timeout_graceful_shutdown=5
    )  # SIGTERM or the idle watch: exit within 5 s even with a request or a background task left
    server = uvicorn.Server(config)

    def _idle_watch() -> None:
        while not server.should_exit:
            time.sleep(1.0)
            if time.monotonic() - last_request[0] > args.idle_exit:
                server.should_exit = True

    threading.Thread(target=_idle_watch, daemon=True).start()
    state = json.dumps({"port": port, "pid": os.getpid(), "server": args.server})
    tmp = f"{args.state_file}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(state)
    os.replace(tmp, args.state_file)
    print(state, flush=True)
    asyncio.run(_serve_with_client(server, sock))


async def _serve_with_client(server, sock: socket.socket) -> None:
    """Serve, with NeMo Gym's global aiohttp client made first (in the loop) from its default config: servers
    that call other servers (a judge) would otherwise build it from a global config parsed off the CLI."""
    from nemo_gym.server_utils import GlobalAIOHTTPAsyncClientConfig, set_global_aiohttp_client

    set_global_aiohttp_client(GlobalAIOHTTPAsyncClientConfig())
    await server.serve(sockets=[sock])


def zygote(socket_path: str, idle_exit: float) -> None:
    """Import what every server needs once (NeMo Gym, FastAPI, uvicorn: ~7 s of CPU), then fork one process per
    server asked for on the unix socket ``socket_path``: a request is a JSON line ``{"argv": [...], "log": PATH}``,
    the answer ``{"pid": N}``. Each child is a server process of its own (own session, stderr to its log). Exits
    after ``idle_exit`` seconds without requests."""
    import signal

    import fastapi  # noqa: F401
    import nemo_gym.base_resources_server
    import nemo_gym.server_utils  # noqa: F401
    import uvicorn  # noqa: F401
    from omegaconf import OmegaConf  # noqa: F401

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(64)
    listener.settimeout(idle_exit)
    print(json.dumps({"zygote": os.getpid()}), flush=True)
    while True:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            break
        with conn:
            request = json.loads(conn.makefile("r").readline())
            pid = os.fork()
            if pid == 0:
                listener.close()
                conn.close()
                os.setsid()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                null = os.open(os.devnull, os.O_RDWR)
                os.dup2(null, 0)
                os.dup2(null, 1)
                os.dup2(log, 2)
                code = 0
                try:
                    serve(request["argv"])
                except BaseException:  # reported in the log; the parent sees the process gone
                    import traceback

                    traceback.print_exc()
                    code = 1
                sys.stderr.flush()
                os._exit(code)
            conn.sendall((json.dumps({"pid": pid}) + "\n").encode())
    os.unlink(socket_path)


def main() -> None:
    if sys.argv[1:2] == ["--zygote"]:
        zygote(sys.argv[2], float(sys.argv[3]))
    else:
        serve(sys.argv[1:])


if __name__ == "__main__":
    main()
