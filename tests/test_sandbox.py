"""The Sandbox protocol on every backend: runs, limits, languages, sessions, selection."""

import json
import os
import shutil
import signal
import threading
import time

import pytest

from gym_nemo.sandbox import ExecResult, Limits, LocalSandbox, Sandbox, SandboxRequirementError, get_sandbox
from gym_nemo.sandbox.forkserver import callsetup


def test_runs_code_with_stdin(sandbox: Sandbox) -> None:
    result = sandbox.run("import sys\nprint(sys.stdin.read().upper())", stdin="héllo")
    assert result.ok and result.stdout == "HÉLLO\n" and result.exit_code == 0
    assert isinstance(sandbox, Sandbox)


def test_exit_codes_and_tracebacks(sandbox: Sandbox) -> None:
    assert sandbox.run("raise SystemExit(3)").exit_code == 3
    result = sandbox.run("1/0")
    assert result.exit_code == 1 and 'File "main.py", line 1' in result.stderr and "ZeroDivisionError" in result.stderr
    assert "forkserver" not in result.stderr  # the harness's own frames are not shown
    result = sandbox.run("def f(:\n  pass")
    assert result.exit_code == 1 and "SyntaxError" in result.stderr
    assert sandbox.run("if __name__ == '__main__':\n    print('main')").stdout == "main\n"


def test_rlimits_inside(sandbox: Sandbox) -> None:
    code = (
        "import resource, json\n"
        "names = ['RLIMIT_AS', 'RLIMIT_FSIZE', 'RLIMIT_NOFILE', 'RLIMIT_NPROC', 'RLIMIT_CORE']\n"
        "print(json.dumps({n: resource.getrlimit(getattr(resource, n))[0] for n in names}))"
    )
    limits = json.loads(sandbox.run(code, timeout=3).stdout)
    assert limits == {
        "RLIMIT_AS": 512 * 1024 * 1024,
        "RLIMIT_FSIZE": 1024 * 1024,
        "RLIMIT_NOFILE": 64,
        "RLIMIT_NPROC": 64,
        "RLIMIT_CORE": 0,
    }


def test_environment_is_minimal(sandbox: Sandbox) -> None:
    env = json.loads(sandbox.run("import os, json; print(json.dumps(dict(os.environ)))").stdout)
    assert set(env) <= {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE",
                        "PYTHONIOENCODING", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"}  # fmt: skip


def test_fresh_scratch_per_run(sandbox: Sandbox) -> None:
    first = sandbox.run("import os; open('x', 'w').write('1'); print(os.getcwd())")
    second = sandbox.run("import os; print(os.path.exists('x'))")
    assert first.ok and second.stdout == "False\n"


def test_output_flag_and_timeout_flag(sandbox: Sandbox) -> None:
    start = time.monotonic()
    result = sandbox.run("while True: print('x' * 1000)")
    assert result.output_truncated and len(result.stdout.encode()) <= 64 * 1024 and result.exit_code is None
    assert time.monotonic() - start < 3
    result = sandbox.run("while True: pass", timeout=0.5)
    assert result.timed_out and result.exit_code is None and not result.ok


def test_memory_and_file_size_flags(sandbox: Sandbox) -> None:
    assert sandbox.run("x = bytearray(2 * 1024**3)").memory_exceeded
    assert sandbox.run("open('f', 'wb').write(b'x' * (4 * 1024 * 1024))").file_size_exceeded


def test_bash_and_cpp(sandbox: Sandbox) -> None:
    result = sandbox.run("echo $((6*7)); exit 4", language="bash")
    assert result.stdout == "42\n" and result.exit_code == 4
    cpp = '#include <cstdio>\nint main(){int a,b; scanf("%d %d",&a,&b); printf("%d\\n", a+b);}'
    result = sandbox.run(cpp, language="cpp", stdin="2 40", timeout=30)
    assert result.stdout == "42\n" and result.exit_code == 0, result.stderr
    broken = sandbox.run("int main( {", language="cpp", timeout=30)
    assert broken.exit_code == 125 and "error" in broken.stderr


def test_unknown_language(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="unsupported language 'cobol'"):
        sandbox.run("x", language="cobol")


def test_sessions_keep_state_and_are_isolated(sandbox: Sandbox) -> None:
    with sandbox.session() as a, sandbox.session() as b:
        assert a.run("x = 41\nopen('f.txt', 'w').write('kept')").ok
        assert a.run("x += 1; print(x, open('f.txt').read())").stdout == "42 kept\n"
        other = b.run("print('x' in globals())")
        assert other.stdout == "False\n"
        assert b.run("import os; print(os.path.exists('f.txt'))").stdout == "False\n"


def test_session_survives_errors_and_restarts_after_a_timeout(sandbox: Sandbox) -> None:
    with sandbox.session(timeout=1) as s:
        assert s.run("y = 1").ok
        assert s.run("raise ValueError('boom')").exit_code == 1
        assert s.run("print(y)").stdout == "1\n"  # an exception does not lose state
        assert s.run("while True: pass").timed_out
        again = s.run("print(y)")
        assert "fresh session" in again.stderr and "NameError" in again.stderr
        assert s.run("print(2)").stdout == "2\n"


def test_many_sessions_beyond_the_slot_count(sandbox: Sandbox) -> None:
    sessions = [sandbox.session() for _ in range(12)]
    try:
        for i, s in enumerate(sessions):
            assert s.run(f"v = {i}").ok
        assert [s.run("print(v)").stdout for s in sessions] == [f"{i}\n" for i in range(12)]
    finally:
        for s in sessions:
            s.close()


def test_require_refuses_a_weaker_sandbox() -> None:
    weak = LocalSandbox(namespaces=False, base_uid=0)
    if weak.enforced()["filesystem_isolation"]:
        pytest.skip("process mode unexpectedly isolates the filesystem")
    with pytest.raises(SandboxRequirementError, match="filesystem_isolation"):
        get_sandbox(weak, require=["filesystem_isolation"])
    with pytest.raises(ValueError, match="unknown protections"):
        get_sandbox(weak, require=["magic"])
    assert get_sandbox(weak, require=["wall_timeout"]) is weak


def test_get_sandbox_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_sandbox().name == "local"
    monkeypatch.setenv("GYM_NEMO_SANDBOX", "warp")
    with pytest.raises(ValueError, match="unknown sandbox backend 'warp'"):
        get_sandbox()


def test_calls_are_set_up_in_c_where_a_compiler_is_found() -> None:
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler here: calls are set up in Python")
    info = LocalSandbox().info()
    assert info["call_setup"] == "c", info["notes"]
    assert LocalSandbox(call_setup="python").info()["call_setup"] == "python"


def test_call_setup_falls_back_to_python_and_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    broken = tmp_path / "callsetup.c"
    broken.write_text("this is not C\n")
    monkeypatch.setattr(callsetup, "CALL_SETUP_C", str(broken))
    library, why = callsetup.build_call_setup(str(tmp_path), str(tmp_path))
    assert library is None and "call setup in Python" in why
    monkeypatch.setattr(callsetup, "CALL_SETUP_C", str(tmp_path / "missing.c"))
    assert callsetup.build_call_setup(str(tmp_path), str(tmp_path)) == (
        None,
        "callsetup.c not found: call setup in Python",
    )


def test_version_names_the_backend(sandbox: Sandbox) -> None:
    assert sandbox.version.startswith(f"{sandbox.name}:")


def test_docker_fresh_container_per_session() -> None:
    from tests.sandboxes import make_backend

    pooled = make_backend("docker")  # skips, saying why, without an engine
    from gym_nemo.sandbox.docker import DockerSandbox

    box = DockerSandbox(pooled.limits, pool_size=1, fresh_container_per_session=True)
    label = {"label": f"org.gym_nemo.pool={box.key}"}
    before = {c.name for c in box.docker.containers.list(**{"filters": label})}
    with box.session() as first:
        assert first.run("open('/tmp/mark', 'w').write('x'); print('ok')").stdout == "ok\n"
        during = {c.name for c in box.docker.containers.list(filters=label)}
        assert len(during - before) == 1  # a container of its own
    with box.session() as second:
        assert second.run("import os; print(os.path.exists('/tmp/mark'))").stdout == "False\n"
    time.sleep(0.5)
    assert {c.name for c in box.docker.containers.list(filters=label)} <= before  # removed with the session
    box.remove_pool()


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError):
        return None


def _zygote_family(supervisor: int) -> dict[int, int]:
    """pid -> parent pid of the zygotes of the daemon ``supervisor`` and the call processes they fork (which
    carry the same command line, wherever they were re-parented); other daemons on the machine (other
    checkouts' tests) are left alone."""
    found = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        ppid = _ppid(int(entry)) if entry.isdigit() else None
        if b"--zygote" in argv and ppid is not None:
            found[int(entry)] = ppid

    def descends(pid: int | None) -> bool:
        while pid and pid != 1:
            if pid == supervisor:
                return True
            pid = _ppid(pid)
        return False

    return {pid: ppid for pid, ppid in found.items() if descends(ppid)}


@pytest.mark.parametrize("call_setup", ["auto", "python"])
def test_a_dead_zygote_is_an_infra_error_and_is_replaced(call_setup: str) -> None:
    """The process that forks calls dies (it never should): the call in flight reports an infra error,
    every process it had forked goes, and the next calls run on a new zygote."""
    box = LocalSandbox(Limits(timeout_s=20), call_setup=call_setup)
    assert box.run("print(1)").stdout == "1\n"
    supervisor = box._request({"op": "ping"})["supervisor"]
    family = _zygote_family(supervisor)
    zygotes = {pid for pid, ppid in family.items() if ppid not in family}
    assert zygotes, "no zygote process found"
    result: dict[str, ExecResult] = {}
    waiter = threading.Thread(target=lambda: result.update(r=box.run("import time\ntime.sleep(15)")))
    waiter.start()
    time.sleep(1.0)
    for pid in zygotes:
        os.kill(pid, signal.SIGKILL)
    waiter.join(timeout=10)
    assert not waiter.is_alive(), "the call in flight hung when its zygote died"
    assert result["r"].infra_error, result["r"]
    assert [box.run("print(2)").stdout for _ in range(3)] == ["2\n"] * 3
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and set(family) & set(_zygote_family(supervisor)):
        time.sleep(0.05)
    assert not set(family) & set(_zygote_family(supervisor)), "a process of the dead zygote survived"
