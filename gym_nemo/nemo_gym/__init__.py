"""NeMo Gym's own resources servers, run for real: the runtime (a Python >= 3.12 venv with ``nemo-gym``
pinned), one shared server process per server per machine, and the table of the pinned wheel's servers.

For other code (tests, differential conformance, benchmarks) that wants a real server:

>>> from gym_nemo.nemo_gym import start_server, NeMoGymClient  # doctest: +SKIP
>>> url = start_server("mcqa")  # http://127.0.0.1:PORT, started (or reused) under a file lock
>>> client = NeMoGymClient("mcqa")  # one session: client.new_session(row); client.post("/verify", body)
"""

from typing import Any

from gym_nemo.nemo_gym.runtime import NEMO_GYM_VERSION, RuntimeMissing, find_python, setup, venv_dir, venv_python
from gym_nemo.nemo_gym.table import STATUSES, offline_servers, server_entry, servers

#: The client side needs httpx (the ``nemo-gym`` extra); imported on first use, so ``import gym_nemo`` (which
#: registers the ids from the table) works on the core install.
_SERVER_NAMES = {"NeMoGymClient", "ServerHTTPError", "ServerStartError", "drop_nulls", "server_pid"}
_SERVER_NAMES |= {"start_server", "stop_server"}


def __getattr__(name: str) -> Any:
    if name in _SERVER_NAMES:
        from gym_nemo.nemo_gym import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "NEMO_GYM_VERSION",
    "STATUSES",
    "NeMoGymClient",
    "RuntimeMissing",
    "ServerHTTPError",
    "ServerStartError",
    "drop_nulls",
    "find_python",
    "offline_servers",
    "server_entry",
    "server_pid",
    "servers",
    "setup",
    "start_server",
    "stop_server",
    "venv_dir",
    "venv_python",
]
