"""The sandbox backends every sandbox test runs against; unavailable ones skip and say why."""

from __future__ import annotations

import os

import pytest

from gym_nemo.sandbox import Limits, LocalSandbox, Sandbox

LIMITS = Limits(timeout_s=5, memory_mb=512, max_output_bytes=64 * 1024, max_file_mb=1)
_cache: dict[str, Sandbox] = {}


def make_backend(name: str) -> Sandbox:
    if name in _cache:
        return _cache[name]
    if name == "local":
        box: Sandbox = LocalSandbox(LIMITS)
    elif name == "local-process":
        if os.geteuid() != 0:
            pytest.skip("local-process differs from local only when running as root")
        box = LocalSandbox(LIMITS, namespaces=False)
    elif name == "local-pysetup":  # call processes set up by the Python path, where no C compiler is found
        box = LocalSandbox(LIMITS, call_setup="python")
    elif name == "docker":
        from gym_nemo.sandbox.docker import DockerSandbox, docker_unavailable_reason

        reason = docker_unavailable_reason()
        if reason:
            print(f"docker sandbox tests skipped: {reason}")
            pytest.skip(reason)
        box = DockerSandbox(LIMITS, pool_size=2)
    elif name == "docker-gvisor":
        from gym_nemo.sandbox.docker import DockerSandbox, docker_unavailable_reason

        reason = docker_unavailable_reason() or gvisor_unavailable_reason()
        if reason:
            print(f"gVisor sandbox tests skipped: {reason}")
            pytest.skip(reason)
        box = DockerSandbox(LIMITS, pool_size=1, runtime="runsc")
    else:
        raise ValueError(name)
    _cache[name] = box
    return box


BACKENDS = ["local", "local-pysetup", "local-process", "docker", "docker-gvisor"]


def gvisor_unavailable_reason() -> str | None:
    import docker

    if "runsc" not in docker.from_env().info().get("Runtimes", {}):
        return "the Docker engine has no runsc (gVisor) runtime; sandbox/start_docker.sh registers Debian's runsc"
    return None


def require(sandbox: Sandbox, protection: str) -> None:
    """Skip (saying why) unless the backend claims ``protection``; if it claims it, the attack must fail."""
    if not sandbox.enforced().get(protection):
        mode = getattr(sandbox, "info", lambda: {})().get("mode", "")
        pytest.skip(f"{sandbox.name} ({mode}) does not claim {protection!r} on this host")
