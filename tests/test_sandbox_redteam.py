"""Red team: attacks from model-written code, run against every available backend.

Each attack names the protection that must stop it. A backend that claims the protection in
``enforced()`` must stop the attack; one that does not claim it skips that attack and says so, which also
keeps ``enforced()`` honest. Every attack is bounded in time and count, the host must be unchanged
afterwards, and the next call must still work.
"""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gym_nemo.sandbox import Sandbox
from tests.sandboxes import require

SANDBOX_UIDS = range(61000, 63000)


def host_processes_of_sandbox_uids() -> list[tuple[int, str]]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            uid = os.stat(f"/proc/{entry}").st_uid
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if uid in SANDBOX_UIDS:
            found.append((int(entry), cmd))
    return found


def host_cmdlines() -> str:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    out.append(fh.read().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass
    return "\n".join(out)


def host_mounts() -> list[str]:
    """The host's mount table, less the Docker engine's own container bookkeeping (overlay, nsfs)."""
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if "docker" not in line]


@pytest.fixture
def host_unchanged(sandbox: Sandbox) -> Iterator[None]:
    """Snapshot what an escape would change; compare after the attack; then prove the sandbox still works."""
    tmp_before = set(os.listdir(tempfile.gettempdir()))
    mounts_before = host_mounts()
    procs_before = set(host_processes_of_sandbox_uids())  # other tests' open sessions may live on
    yield
    deadline = time.monotonic() + 3
    while set(host_processes_of_sandbox_uids()) - procs_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(host_processes_of_sandbox_uids()) - procs_before == set(), "a sandboxed process outlived its call"
    assert host_mounts() == mounts_before
    new_tmp = {n for n in set(os.listdir(tempfile.gettempdir())) - tmp_before if not n.startswith("pytest")}
    assert not {n for n in new_tmp if "redteam" in n}, new_tmp
    after = sandbox.run("print('still working')")
    assert after.ok and after.stdout == "still working\n"


@pytest.fixture
def listener() -> Iterator[int]:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    yield server.getsockname()[1]
    try:
        conn, _ = server.accept()
        conn.close()
        raise AssertionError("the sandbox reached a host port")
    except TimeoutError:
        pass
    finally:
        server.close()


def test_connect_to_a_loopback_port(sandbox: Sandbox, listener: int, host_unchanged: None) -> None:
    require(sandbox, "no_network")
    code = (
        "import socket\n"
        "for family, host in ((socket.AF_INET, '127.0.0.1'), (socket.AF_INET6, '::1')):\n"
        "    try:\n"
        f"        socket.create_connection((host, {listener}), timeout=1); print('CONNECTED')\n"
        "    except Exception as exc:\n"
        "        print('blocked', type(exc).__name__)\n"
    )
    result = sandbox.run(code, timeout=5)
    assert "CONNECTED" not in result.stdout and result.stdout.count("blocked") == 2, result


def test_write_outside_the_scratch_dir(sandbox: Sandbox, host_unchanged: None) -> None:
    require(sandbox, "filesystem_isolation")
    name = f"gym_nemo_redteam_{secrets.token_hex(4)}"
    targets = [f"/tmp/{name}", f"/var/tmp/{name}", f"/dev/shm/{name}", f"{os.getcwd()}/{name}", f"/etc/{name}"]
    code = "\n".join(
        f"try:\n    open({t!r}, 'w').write('x'); print('wrote', {t!r})\nexcept OSError as e:\n    print('no', e.errno)"
        for t in targets
    )
    sandbox.run(code)
    assert not any(os.path.exists(t) for t in targets)


def test_read_a_root_only_file(sandbox: Sandbox, host_unchanged: None, tmp_path: Path) -> None:
    require(sandbox, "unprivileged_uid")
    secret = secrets.token_hex(8)
    private = tmp_path / "private"
    private.write_text(secret)
    private.chmod(0o600)
    code = "\n".join(
        f"try:\n    print(open({p!r}).read())\nexcept OSError as e:\n    print('denied', e.errno)"
        for p in ("/etc/shadow", str(private))
    )
    result = sandbox.run(code)
    assert secret not in result.stdout and "root:" not in result.stdout


def test_read_a_planted_world_readable_file(sandbox: Sandbox, host_unchanged: None) -> None:
    require(sandbox, "filesystem_isolation")
    secret = secrets.token_hex(8)
    with tempfile.NamedTemporaryFile("w", prefix="gym_nemo_redteam_", dir="/tmp", delete=False) as fh:
        fh.write(secret)
    os.chmod(fh.name, 0o644)
    try:
        result = sandbox.run("import glob\nfor p in glob.glob('/tmp/gym_nemo_redteam_*'):\n    print(open(p).read())")
        assert secret not in result.stdout
    finally:
        os.unlink(fh.name)


def test_read_an_environment_secret(sandbox: Sandbox, host_unchanged: None, monkeypatch) -> None:
    secret = secrets.token_hex(8)
    monkeypatch.setenv("GYM_NEMO_REDTEAM_SECRET", secret)
    code = (
        "import os, glob\nprint(dict(os.environ))\n"
        "for p in glob.glob('/proc/*/environ'):\n"
        "    try:\n        print(open(p, 'rb').read())\n    except OSError:\n        pass\n"
    )
    assert secret not in sandbox.run(code).stdout


def test_fork_bomb(sandbox: Sandbox, host_unchanged: None) -> None:
    require(sandbox, "processes")
    code = (
        "import os, time\n"
        "n = 0\n"
        "for _ in range(2000):\n"
        "    try:\n        os.fork() and None; n += 1\n"
        "    except OSError:\n        break\n"
        "time.sleep(0.5)\n"
    )
    start = time.monotonic()
    result = sandbox.run(code, timeout=3)
    assert time.monotonic() - start < 10
    if result.infra_error and getattr(sandbox, "runtime", None) == "runsc":
        # Known: Debian's 2022 runsc build loses the whole sandbox when a few dozen processes fork; the
        # container is replaced (the teardown checks containment and that the next call works).
        pytest.xfail(f"gVisor sandbox died under the fork bomb: {result.infra_error}")
    assert result.exit_code is not None or result.timed_out


def test_memory_bomb(sandbox: Sandbox, host_unchanged: None) -> None:
    require(sandbox, "memory")
    result = sandbox.run("blocks = []\nwhile True:\n    blocks.append(bytearray(64 * 1024 * 1024))")
    assert result.memory_exceeded and result.exit_code != 0


def test_busy_loop(sandbox: Sandbox, host_unchanged: None) -> None:
    start = time.monotonic()
    result = sandbox.run("while True: pass", timeout=1)
    assert result.timed_out and 0.9 < time.monotonic() - start < 4


def test_one_gigabyte_of_output(sandbox: Sandbox, host_unchanged: None) -> None:
    start = time.monotonic()
    result = sandbox.run("import sys\nfor _ in range(1024):\n    sys.stdout.write('x' * (1 << 20))")
    assert result.output_truncated and len(result.stdout) <= 64 * 1024
    assert time.monotonic() - start < 5


def test_detached_child_does_not_survive(sandbox: Sandbox, host_unchanged: None) -> None:
    token = f"{secrets.randbelow(10**6) + 10**6}.{secrets.randbelow(10**5)}"
    code = (
        "import os, subprocess\n"
        f"subprocess.Popen(['sleep', '{token}'], start_new_session=True)\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execvp('sleep', ['sleep', '{token}'])\n"
        "    os._exit(0)\n"
        "print('spawned')\n"
    )
    assert sandbox.run(code).stdout == "spawned\n"
    deadline = time.monotonic() + 3
    while token in host_cmdlines() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert token not in host_cmdlines()


def test_kill_the_parent(sandbox: Sandbox, host_unchanged: None) -> None:
    code = (
        "import os, signal\n"
        "for pid in (os.getppid(), 1):\n"
        "    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError as e:\n        print('denied', e.errno)\n"
        "try:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass\n"
    )
    sandbox.run(code)  # whatever it does to itself, the fork server and the next call must survive


def test_ptrace(sandbox: Sandbox, host_unchanged: None) -> None:
    require(sandbox, "seccomp")
    code = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n    import time; time.sleep(2); os._exit(0)\n"
        "r = libc.ptrace(16, pid, None, None)\n"  # PTRACE_ATTACH
        "print(r, ctypes.get_errno())\n"
        "os.kill(pid, 9)\n"
    )
    assert sandbox.run(code).stdout.strip() == "-1 1"  # EPERM


def test_mount_and_namespaces(sandbox: Sandbox, host_unchanged: None) -> None:
    require(sandbox, "seccomp")
    code = (
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.mount(b'tmpfs', b'/tmp', b'tmpfs', 0, None), ctypes.get_errno())\n"
        "print(libc.unshare(0x10000000), ctypes.get_errno())\n"  # CLONE_NEWUSER
        "print(libc.chroot(b'/'), ctypes.get_errno())\n"
    )
    assert sandbox.run(code).stdout.split() == ["-1", "1"] * 3


def test_reward_forgery_through_files_the_verifier_might_read(host_unchanged: None) -> None:
    """The policy's session plants files where a careless verifier would look; the verdict stays 0."""
    from gym_nemo.envs.code_exec import CodeExecEnv

    env = CodeExecEnv(timeout_s=5)
    env.reset(options={"task_id": "HumanEval/0"})
    plant = (
        "import os\n"
        "open('main.py', 'w').write('print(1)')\n"
        "open('sitecustomize.py', 'w').write('import os; os._exit(0)')\n"
        "open('check.py', 'w').write('def check(c): pass')\n"
        "print(os.listdir('.'))"
    )
    env.step(
        f'<tool_call>{{"name": "execute_python", "arguments": {{"code": {plant!r}}}}}</tool_call>'.replace("'", '"', 0)
    )
    _, reward, terminated, _, info = env.step(
        "```python\ndef has_close_elements(numbers, threshold):\n    return False\n```"
    )
    assert terminated and reward == 0.0 and not info["verdict"]["passed"]
    env.close()
