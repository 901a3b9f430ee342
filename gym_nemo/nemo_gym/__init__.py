"""NeMo Gym's own resources servers, run for real: the runtime (a Python >= 3.12 venv with ``nemo-gym``
pinned), one shared server process per server per machine, and the table of the pinned wheel's servers.

For other code (tests, differential conformance, benchmarks) that wants a real server:

>>> from gym_nemo.nemo_gym import start_server, NeMoGymClient  # doctest: +SKIP
>>> url = start_server("mcqa")  # http://127.0.0.1:PORT, started (or reused) under a file lock
>>> client = NeMoGymClient("mcqa")  # one session: client.new_session(row); client.post("/verify", body)
"""

from gym_nemo.nemo_gym.runtime import NEMO_GYM_VERSION, RuntimeMissing, find_python, setup, venv_dir, venv_python
from gym_nemo.nemo_gym.server import (
    NeMoGymClient,
    ServerHTTPError,
    ServerStartError,
    drop_nulls,
    server_pid,
    start_server,
    stop_server,
)
from gym_nemo.nemo_gym.table import STATUSES, offline_servers, server_entry, servers

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
