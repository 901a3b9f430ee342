"""Env workers as Ray actors on a local Ray cluster (started here, shut down after).

Not collected on its own: tests/test_ray.py runs this file with pytest inside a private network namespace
that has only a loopback interface, because Ray's gRPC servers bind every interface whatever address it is
given (checked below: in the namespace, every listening socket can only be reached over loopback).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the Ray tests need the ray extra: pip install 'gym-nemo[ray]'")

import gym_nemo  # noqa: E402
from gym_nemo.rollout import collect_rollouts  # noqa: E402


class ReferenceAnswers:
    """Answers each task with the reference answer of the prompt's task, found by task id (a real policy's
    stand-in that needs no model)."""

    name = "reference-by-id"

    def __init__(self, env_id: str) -> None:
        import gymnasium as gym

        env = gym.make(env_id)
        self.references = {t.task_id: t.reference for t in env.unwrapped.tasks}
        env.close()

    def act(self, observations, infos) -> list[str]:
        return [self.references[info["task_id"]] for info in infos]


def _listening_addresses(pids: set[int]) -> set[str]:
    """Local addresses of the TCP sockets in LISTEN state that belong to ``pids``."""
    inodes: set[str] = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            for fd in fd_dir.iterdir():
                try:
                    target = fd.readlink().as_posix()
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                addresses.add(fields[1].split(":")[0])
    return addresses


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray 'cluster' on loopback only: no dashboard, 2 CPUs."""
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
    assert not ray.is_initialized()


def test_ray_is_reachable_over_loopback_only(local_ray) -> None:
    import psutil

    interfaces = [line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:]]
    assert interfaces == ["lo"], f"the network namespace has more than loopback: {interfaces}"
    me = psutil.Process()
    pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
    addresses = _listening_addresses(pids)
    assert addresses, "Ray's processes listen on no TCP socket at all?"
    # 127.0.0.1, ::1, ::ffff:127.0.0.1, or a wildcard, which in a namespace whose only interface is lo means
    # loopback
    loopback = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}
    reachable_only_here = loopback | {"00000000", "0" * 32}
    assert addresses <= reachable_only_here, f"Ray listens on an address outside loopback: {addresses}"


def test_ray_vector_env_with_the_collector(local_ray, tmp_path) -> None:
    from gym_nemo.serve.ray import make_ray_vec

    envs = make_ray_vec("nemo/Math-v0", 3)
    out = tmp_path / "ray.jsonl"
    try:
        nodes = {ray.get(a.where.remote()) for a in envs.actors}
        records, summary = collect_rollouts(
            envs, ReferenceAnswers("nemo/Math-v0"), 9, env_id="nemo/Math-v0", out=out, progress=False
        )
    finally:
        envs.close()
    assert len(nodes) == 1  # one node here; actors land wherever the cluster has room
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == len(records) == 9 and summary.pass_rate == 1.0
    assert all(line["verdict"]["passed"] and line["versions"]["env"] == "nemo/Math-v0" for line in lines)


def _wait_until_dead(actor, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get(actor.where.remote(), timeout=5)
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.05)
    raise AssertionError("the killed actor still answers")


def test_a_lost_actor_is_an_infra_error_and_is_replaced(local_ray) -> None:
    from gym_nemo.serve.ray import make_ray_vec
    from gym_nemo.wrappers.vector import unbatch_info

    envs = make_ray_vec("nemo/Math-v0", 2)
    try:
        envs.reset(seed=0)
        ray.kill(envs.actors[0], no_restart=True)  # the worker process is gone mid-episode
        _wait_until_dead(envs.actors[0])  # ray.kill returns before the actor is gone
        obs, rewards, terminated, truncated, infos = envs.step(["\\boxed{1}", "\\boxed{1}"])
        lost, fine = unbatch_info(infos, 0), unbatch_info(infos, 1)
        assert truncated[0] and not terminated[0] and rewards[0] == 0.0
        assert "env worker lost" in lost["final_info"]["infra_error"]
        assert terminated[1] and "infra_error" not in fine["final_info"]
        assert obs[0] and lost["task_id"]  # the replacement actor already started the next episode
        _, _, terminated, _, _ = envs.step(["\\boxed{1}", "\\boxed{1}"])
        assert terminated.all()
    finally:
        envs.close()


def test_a_sandboxed_env_and_the_single_env_proxy(local_ray) -> None:
    from gym_nemo.serve.ray import RayEnv

    env = RayEnv("nemo/CodeExec-v0", timeout_s=5)
    try:
        env.reset(seed=0)
        call = '<tool_call>{"name": "execute_python", "arguments": {"code": "print(6 * 7)"}}</tool_call>'
        obs, _, terminated, truncated, info = env.step(call)
        assert "42" in obs and not (terminated or truncated) and "infra_error" not in info
    finally:
        env.close()
    assert gym_nemo.__version__
