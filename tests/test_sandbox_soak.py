"""Soak: 10,000 calls, timeouts included, leave no processes, zombies, containers, temp dirs or fds behind."""

from __future__ import annotations

import os
import tempfile
import threading
import time

import pytest

from gym_nemo.sandbox import Limits, LocalSandbox
from tests.sandboxes import make_backend

CALLS = 10_000
TIMEOUT_EVERY = 250  # 40 of the calls are busy loops killed at their 0.2 s timeout


def hammer(sandbox, calls: int, failures: list[str]) -> None:
    for i in range(calls):
        if i % TIMEOUT_EVERY == 0:
            result = sandbox.run("while True: pass", timeout=0.2)
            if not result.timed_out:
                failures.append(f"call {i}: expected a timeout, got {result}")
        else:
            result = sandbox.run(f"print({i})")
            if result.stdout != f"{i}\n":
                failures.append(f"call {i}: {result}")


def children_of(pid: int) -> list[tuple[int, str]]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append((int(entry), fields[0].decode()))
    return out


def run_soak(make_client, calls: int = CALLS) -> float:
    clients = [make_client() for _ in range(2)]
    failures: list[str] = []
    start = time.monotonic()
    threads = [threading.Thread(target=hammer, args=(c, calls // 2, failures)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    for client in clients:
        client.close()
    assert not failures, failures[:5]
    return elapsed


def test_local_soak_leaves_nothing_behind() -> None:
    limits = Limits(timeout_s=5)
    probe = LocalSandbox(limits)
    assert probe.run("print(0)").ok
    supervisor = probe._request({"op": "ping"})["supervisor"]
    workers = [pid for pid, _ in children_of(supervisor)]
    run_soak(lambda: LocalSandbox(limits), calls=1000)  # warm every worker up (lazily opened fds)
    time.sleep(0.5)
    children_before = {w: set(children_of(w)) for w in workers}  # other tests' sessions may be open
    fds_before = {w: len(os.listdir(f"/proc/{w}/fd")) for w in workers}
    tmp_before = set(os.listdir(tempfile.gettempdir()))
    elapsed = run_soak(lambda: LocalSandbox(limits))
    time.sleep(1.5)  # workers reap stragglers at least once a second
    for worker in workers:
        assert set(children_of(worker)) <= children_before[worker], "processes or zombies left under a worker"
        # A leak per call would show thousands after 10,000 calls; allow 2 for connections still closing.
        assert len(os.listdir(f"/proc/{worker}/fd")) <= fds_before[worker] + 2, "file descriptors leaked"
    assert sorted(pid for pid, _ in children_of(supervisor)) == sorted(workers)
    new_tmp = set(os.listdir(tempfile.gettempdir())) - tmp_before
    assert not [n for n in new_tmp if n.startswith(("gym_nemo_scratch", "gym_nemo_fs", "gym_nemo_root"))], new_tmp
    print(f"local soak: {CALLS} calls in {elapsed:.1f} s ({CALLS / elapsed:.0f} calls/s)")


def test_docker_soak_leaves_nothing_behind() -> None:
    box = make_backend("docker")  # skips, saying why, without an engine
    box.remove_pool()
    assert box.run("print(0)").ok
    before = {c.name for c in box.docker.containers.list(filters={"label": f"org.gym_nemo.pool={box.key}"})}
    elapsed = run_soak(lambda: box)
    box.run("print(0)")  # run_soak closed this process's connections; reconnect
    time.sleep(1.5)
    after = box.docker.containers.list(filters={"label": f"org.gym_nemo.pool={box.key}"})
    assert {c.name for c in after} == before, "containers were added or lost"
    for container in after:
        procs = container.top()["Processes"]
        assert procs and all("/forkserver" in p[-1] for p in procs), procs  # only the fork server remains
    box.remove_pool()
    time.sleep(0.5)
    assert box.docker.containers.list(all=True, filters={"label": f"org.gym_nemo.pool={box.key}"}) == []
    print(f"docker soak: {CALLS} calls in {elapsed:.1f} s ({CALLS / elapsed:.0f} calls/s)")


@pytest.fixture(autouse=True)
def _print_figures(capsys):
    yield
    with capsys.disabled():
        print(capsys.readouterr().out.strip())
