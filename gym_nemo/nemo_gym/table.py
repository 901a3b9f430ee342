"""The checked-in table of the pinned NeMo Gym wheel's resources servers (``servers.json``).

Each entry: ``kind`` (``verify``: seed_session, tool routes, /verify; ``non_executing``: the first message,
tool calls included, is the answer; ``gymnasium``: /reset and /step), ``status`` (``offline``: runs here
with no network, judge or data beyond what the wheel ships; ``judge``: needs an LLM judge; ``data``: needs
data the wheel does not ship; ``internet``: needs the internet, a container runtime or packages not
installable offline; ``broken``: fails here for another reason), ``note`` (why), ``replay`` (shipped
example rollouts played through the env that gave back their stored reward, ``"5/5"``; ``""`` when not
measured; a judge server's with :class:`~gym_nemo.testing.nemo_gym_coverage.RecordedJudge`) and, for servers
that call an LLM judge, ``judge_refs`` (the config fields naming it; the env needs ``judge=``). The table is
measured, not guessed: ``python scripts/nemo_gym_table.py`` rebuilds it from the installed wheel. Registered
env ids (``nemo-gym/<server>-v0``) come from it, so they exist before the runtime does.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

TABLE = Path(__file__).with_name("servers.json")
STATUSES = {
    "offline": "runs offline",
    "judge": "needs an LLM judge",
    "data": "needs data not shipped",
    "internet": "needs internet or containers",
    "broken": "fails here (see the note)",
}


@functools.cache
def servers() -> dict[str, dict[str, Any]]:
    """Every server of the pinned wheel: name -> entry (see the module docstring)."""
    return json.loads(TABLE.read_text(encoding="utf-8"))["servers"]


def server_entry(name: str) -> dict[str, Any]:
    """One server's entry; ``ValueError`` listing the known names for an unknown one."""
    try:
        return servers()[name]
    except KeyError:
        raise ValueError(
            f"no NeMo Gym server {name!r} in the pinned wheel's table; known: {', '.join(sorted(servers()))}"
        ) from None


def offline_servers() -> list[str]:
    """The servers that run offline with no LLM judge (each gets a registered ``nemo-gym/<server>-v0`` id)."""
    return sorted(n for n, e in servers().items() if e["status"] == "offline")


def judge_servers() -> list[str]:
    """The servers that score with an LLM judge: they run offline given ``judge=`` (each gets a registered
    ``nemo-gym/<server>-v0`` id whose ``gym.make`` needs ``judge=``)."""
    return sorted(n for n, e in servers().items() if e["status"] == "judge")
