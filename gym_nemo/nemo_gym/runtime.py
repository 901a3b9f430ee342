"""The NeMo Gym runtime: a separate venv with ``nemo-gym`` (pinned) and its servers' own requirements.

NeMo Gym needs Python >= 3.12 and heavy dependencies (ray, mlflow, wandb, hydra) that must stay out of
gym_nemo's own environment, so its servers run as subprocesses of another interpreter: the one in this
venv. ``setup()`` (``gym-nemo nemo-gym setup [SERVER ...]``) finds a Python >= 3.12 (``$GYM_NEMO_PYTHON312``,
``python3.13``/``python3.12`` on PATH, then pyenv's versions), creates the venv, installs
``nemo-gym==NEMO_GYM_VERSION`` and each named server's ``requirements.txt`` (its first line, an editable
install of NeMo Gym's own repo, filtered out). It is idempotent: a stamp in the venv records what was
installed, so a second call with the same servers does nothing.

The venv lives at ``$GYM_NEMO_NEMO_GYM_VENV`` or ``.venv-nemo-gym`` beside the gym_nemo checkout.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

#: The NeMo Gym release the server table (``servers.json``) was measured on.
NEMO_GYM_VERSION = "0.4.0"
MIN_PYTHON = (3, 12)
_STAMP = ".gym_nemo_nemo_gym_stamp.json"


class RuntimeMissing(RuntimeError):
    """The NeMo Gym runtime (interpreter, venv or a server's requirements) is not there; the message says
    which ``gym-nemo nemo-gym setup`` command provides it."""


def venv_dir() -> Path:
    """Where the NeMo Gym venv is (``$GYM_NEMO_NEMO_GYM_VENV``, else ``.venv-nemo-gym`` in the checkout)."""
    configured = os.environ.get("GYM_NEMO_NEMO_GYM_VENV")
    if configured:
        return Path(configured).expanduser().resolve()
    return Path(__file__).resolve().parents[2] / ".venv-nemo-gym"


def venv_python() -> Path:
    return venv_dir() / "bin" / "python"


def _version_of(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    major, minor = out.stdout.split()
    return int(major), int(minor)


def _pyenv_pythons() -> list[str]:
    roots = [os.environ.get("PYENV_ROOT"), str(Path.home() / ".pyenv")]
    if shutil.which("pyenv"):
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=30).stdout.strip()
            roots.insert(0, root)
    found = []
    for root in filter(None, roots):
        versions = Path(root) / "versions"
        if versions.is_dir():
            # newest first; the real interpreter, never pyenv's shim (which costs ~100 ms a launch)
            for version in sorted(versions.iterdir(), key=lambda p: p.name, reverse=True):
                found.append(str(version / "bin" / "python"))
    return found


def python_candidates() -> list[str]:
    """Where a Python >= 3.12 is looked for, in order."""
    candidates = [os.environ.get("GYM_NEMO_PYTHON312") or ""]
    candidates += [shutil.which(name) or "" for name in ("python3.13", "python3.12")]
    candidates += _pyenv_pythons()
    return [c for c in dict.fromkeys(candidates) if c and "/shims/" not in c]


def find_python() -> str:
    """A Python >= 3.12 interpreter; ``RuntimeMissing`` naming every place looked at otherwise."""
    looked = python_candidates()
    for candidate in looked:
        if os.path.exists(candidate) and (_version_of(candidate) or (0, 0)) >= MIN_PYTHON:
            return candidate
    raise RuntimeMissing(
        "NeMo Gym needs Python >= 3.12 and none was found; looked at $GYM_NEMO_PYTHON312, python3.13 and "
        f"python3.12 on PATH and pyenv's versions ({', '.join(looked) or 'none found'}). Install one or set "
        "GYM_NEMO_PYTHON312=/path/to/python3.12"
    )


def package_dir() -> Path:
    """The installed nemo-gym's site-packages folder (which holds ``resources_servers/``)."""
    lib = venv_dir() / "lib"
    for site in sorted(lib.glob("python3.*/site-packages")):
        if (site / "resources_servers").is_dir():
            return site
    raise RuntimeMissing(f"nemo-gym is not installed in {venv_dir()}; run `gym-nemo nemo-gym setup`")


def server_dir(name: str) -> Path:
    return package_dir() / "resources_servers" / name


def installed_servers() -> list[str]:
    """Every resources server in the installed nemo-gym (those with an ``app.py``)."""
    root = package_dir() / "resources_servers"
    return sorted(p.name for p in root.iterdir() if (p / "app.py").is_file())


def requirements(name: str) -> list[str]:
    """A server's ``requirements.txt`` lines, without comments and the editable install of NeMo Gym itself."""
    path = server_dir(name) / "requirements.txt"
    lines: list[str] = []
    if not path.is_file():
        return lines
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-e") and not line.startswith("nemo-gym"):
            lines.append(line)
    return lines


def read_stamp() -> dict[str, object]:
    try:
        return json.loads((venv_dir() / _STAMP).read_text())
    except (OSError, ValueError):
        return {}


def _pip(python: Path, args: Sequence[str]) -> None:
    cmd = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeMissing(f"`{' '.join(cmd)}` failed:\n{tail}")


def setup(servers: Iterable[str] = (), *, log: bool = True) -> Path:
    """Create or complete the NeMo Gym venv; install the requirements of ``servers`` (all table servers that
    run offline, with or without an LLM judge, when ``servers`` is ``["offline"]``). Returns the venv's python.
    Idempotent."""
    venv = venv_dir()
    python = venv / "bin" / "python"
    say = print if log else (lambda *_: None)
    if not python.exists():
        base = find_python()
        say(f"creating {venv} with {base}")
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    stamp = read_stamp()
    if stamp.get("nemo_gym") != NEMO_GYM_VERSION:
        say(f"installing nemo-gym=={NEMO_GYM_VERSION} into {venv} (about 3 minutes the first time)")
        _pip(python, [f"nemo-gym=={NEMO_GYM_VERSION}"])
        stamp = {"nemo_gym": NEMO_GYM_VERSION, "servers": []}
        _write_stamp(stamp)
    names = list(servers)
    if names == ["offline"]:
        from gym_nemo.nemo_gym.table import judge_servers, offline_servers

        names = offline_servers() + judge_servers()
    known = set(installed_servers())
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"no NeMo Gym server {unknown} in nemo-gym {NEMO_GYM_VERSION}; see `gym-nemo nemo-gym list`")
    done = set(stamp.get("servers") or [])  # type: ignore[arg-type]
    todo = [n for n in names if n not in done]
    reqs = sorted({r for n in todo for r in requirements(n)})
    if reqs:
        say(f"installing the requirements of {', '.join(todo)}: {' '.join(reqs)}")
        try:
            _pip(python, reqs)
        except RuntimeMissing:  # pins that conflict across servers: install server by server (later pins win)
            for name in todo:
                if requirements(name):
                    say(f"installing the requirements of {name} alone")
                    _pip(python, requirements(name))
    if todo:
        _write_stamp({**stamp, "servers": sorted(done | set(todo))})
    return python


def _write_stamp(stamp: dict[str, object]) -> None:
    path = venv_dir() / _STAMP
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stamp, sort_keys=True))
    tmp.replace(path)
