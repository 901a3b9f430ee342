"""The local sandbox enforces what it claims: limits, timeouts, output caps, no leftovers."""

import glob
import json
import os
import resource
import time

import pytest

from gym_nemo.sandbox import Limits, LocalSandbox, Sandbox, get_sandbox


@pytest.fixture(scope="module")
def sandbox() -> LocalSandbox:
    return LocalSandbox(Limits(timeout_s=5, memory_mb=512, max_output_bytes=64 * 1024, max_file_mb=1))


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def test_runs_code_with_stdin(sandbox: LocalSandbox) -> None:
    result = sandbox.run("import sys\nprint(sys.stdin.read().upper())", stdin="héllo")
    assert result.ok and result.stdout == "HÉLLO\n" and result.exit_code == 0
    assert isinstance(sandbox, Sandbox)


def test_exit_codes_and_stderr(sandbox: LocalSandbox) -> None:
    result = sandbox.run("raise SystemExit(3)")
    assert result.exit_code == 3 and not result.ok
    result = sandbox.run("1/0")
    assert result.exit_code == 1 and "ZeroDivisionError" in result.stderr


def test_rlimits_are_set_inside(sandbox: LocalSandbox) -> None:
    code = (
        "import resource, json\n"
        "names = ['RLIMIT_CPU', 'RLIMIT_AS', 'RLIMIT_FSIZE', 'RLIMIT_NOFILE', 'RLIMIT_NPROC', 'RLIMIT_CORE']\n"
        "print(json.dumps({n: resource.getrlimit(getattr(resource, n))[0] for n in names}))"
    )
    limits = json.loads(sandbox.run(code, timeout=3).stdout)
    assert limits == {
        "RLIMIT_CPU": 4,
        "RLIMIT_AS": 512 * 1024 * 1024,
        "RLIMIT_FSIZE": 1024 * 1024,
        "RLIMIT_NOFILE": 64,
        "RLIMIT_NPROC": 64,
        "RLIMIT_CORE": 0,
    }


def test_wall_timeout_kills_the_whole_process_group(sandbox: LocalSandbox) -> None:
    code = (
        "import subprocess, sys\n"
        "child = subprocess.Popen(['sleep', '300'])\n"
        "print(child.pid, flush=True)\n"
        "while True: pass\n"
    )
    start = time.monotonic()
    result = sandbox.run(code, timeout=1.5)
    assert result.timed_out and result.exit_code is None and not result.ok
    assert 1.4 < time.monotonic() - start < 4
    child = int(result.stdout.split()[0])
    deadline = time.monotonic() + 2
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)


def test_background_children_do_not_outlive_the_run(sandbox: LocalSandbox) -> None:
    code = "import subprocess\nprint(subprocess.Popen(['sleep', '300']).pid)"
    result = sandbox.run(code)
    assert result.exit_code == 0
    time.sleep(0.2)
    assert not alive(int(result.stdout))


def test_output_cap_kills_a_flood_quickly(sandbox: LocalSandbox) -> None:
    start = time.monotonic()
    result = sandbox.run("while True: print('x' * 1000)")
    assert result.output_truncated and len(result.stdout.encode()) <= 64 * 1024
    assert time.monotonic() - start < 2


def test_memory_limit(sandbox: LocalSandbox) -> None:
    result = sandbox.run("x = bytearray(2 * 1024**3)")
    assert result.memory_exceeded and "MemoryError" in result.stderr


def test_file_size_limit(sandbox: LocalSandbox) -> None:
    result = sandbox.run("open('f', 'wb').write(b'x' * (4 * 1024 * 1024))")
    assert result.file_size_exceeded and result.exit_code != 0


def test_environment_is_scrubbed(sandbox: LocalSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GYM_NEMO_TEST_SECRET", "hunter2")
    result = sandbox.run("import os, json; print(json.dumps(dict(os.environ)))")
    env = json.loads(result.stdout)
    assert "GYM_NEMO_TEST_SECRET" not in env and "hunter2" not in result.stdout
    assert env["HOME"] == env["TMPDIR"]


def test_each_run_gets_a_fresh_scratch_dir_that_is_removed(sandbox: LocalSandbox) -> None:
    before = set(glob.glob("/tmp/gym_nemo_sbx_*"))
    first = sandbox.run("import os; open('x', 'w').write('1'); print(os.getcwd())").stdout.strip()
    second = sandbox.run("import os; print(os.path.exists('x'), os.getcwd())").stdout.split()
    assert second[0] == "False" and second[1] != first
    assert not os.path.exists(first)
    assert set(glob.glob("/tmp/gym_nemo_sbx_*")) == before


def test_bash(sandbox: LocalSandbox) -> None:
    result = sandbox.run("echo $((6*7)); exit 4", language="bash")
    assert result.stdout == "42\n" and result.exit_code == 4


def test_unknown_language_is_a_clear_error(sandbox: LocalSandbox) -> None:
    with pytest.raises(ValueError, match="unsupported language 'cobol'"):
        sandbox.run("x", language="cobol")


def test_enforced_reports_honestly() -> None:
    enforced = LocalSandbox().enforced()
    assert enforced["wall_timeout"] and enforced["output_cap"]
    assert enforced["processes"] == (os.geteuid() != 0)
    assert enforced["no_network"] is False  # this backend does not isolate the network
    assert resource.RLIMIT_NPROC  # the limit exists on this platform


def test_get_sandbox_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_sandbox().name == "local"
    box = LocalSandbox()
    assert get_sandbox(box) is box
    monkeypatch.setenv("GYM_NEMO_SANDBOX", "local")
    assert isinstance(get_sandbox(), LocalSandbox)
    monkeypatch.setenv("GYM_NEMO_SANDBOX", "warp")
    with pytest.raises(ValueError, match="unknown sandbox backend 'warp'"):
        get_sandbox()
