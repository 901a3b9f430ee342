"""Runs the Ray cases (tests/ray_cases.py) in a private network namespace with only loopback, so nothing Ray
starts can be reached from outside this machine, whatever interfaces its gRPC servers bind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the Ray tests need the ray extra: pip install 'gym-nemo[ray]'")

ROOT = Path(__file__).resolve().parent.parent


def test_ray_cases_in_a_loopback_only_network_namespace() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip to give Ray a loopback-only network namespace")
    cases = ROOT / "tests" / "ray_cases.py"
    inner = f"ip link set lo up && exec {sys.executable} -m pytest -q -p no:cacheprovider {cases}"
    run = subprocess.run(["unshare", "--net", "sh", "-c", inner], cwd=ROOT, capture_output=True, text=True, timeout=240)
    print(run.stdout[-4000:], run.stderr[-2000:])
    assert run.returncode == 0, f"Ray cases failed:\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}"
    assert " passed" in run.stdout and "skipped" not in run.stdout
