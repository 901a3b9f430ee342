"""The fork server as a package: one header shared by C and Python, the digest over the whole package, and
nothing of it reachable from user code."""

import ctypes
import shutil

import pytest

from gym_nemo.sandbox import Sandbox, local
from gym_nemo.sandbox.forkserver import abi, callsetup, zygote


def test_abi_reads_the_header() -> None:
    assert abi.PACKET == 65536 and abi.MAX_FDS == 8 and abi.CTL_FD == 3
    assert abi.STAGES[abi.GN["GN_STAGE_SECCOMP"]] == "seccomp" and len(abi.STAGES) == 12
    plan = abi.STRUCTS["gn_plan"]
    assert [name for name, _ in plan._fields_][:3] == ["msg", "msg_len", "scratch"]
    assert ctypes.sizeof(dict(plan._fields_)["rlimits"]) == abi.MAX_RLIMITS * ctypes.sizeof(abi.STRUCTS["gn_rlimit"])
    assert abi.RESULT.size == ctypes.sizeof(abi.STRUCTS["gn_result"])


def test_a_build_from_another_header_is_refused(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler here")
    library, why = callsetup.build_call_setup(str(tmp_path), str(tmp_path))
    assert library and why is None and callsetup.check_build(library) is None
    # The same C source built against a header whose gn_plan grew: its sizes no longer match Python's.
    shutil.copy(callsetup.CALL_SETUP_C, tmp_path / "callsetup.c")
    with open(abi.HEADER_FILE, encoding="utf-8") as fh:
        header = fh.read()
    grown = header.replace("    int session;", "    int session;\n    const char *added;")
    assert grown != header
    (tmp_path / "callsetup.h").write_text(grown)
    monkeypatch.setattr(callsetup, "CALL_SETUP_C", str(tmp_path / "callsetup.c"))
    monkeypatch.setattr(abi, "HEADER_FILE", str(tmp_path / "callsetup.h"))
    other, why = callsetup.build_call_setup(str(tmp_path), str(tmp_path))
    assert other and other != library
    assert "struct gn_plan" in callsetup.check_build(other)


def test_fill_pools_ends_each_size_class_in_an_unused_stretch() -> None:
    """The zygote's fillers end, for each size class, on consecutive addresses (where calls then allocate)."""
    fillers = zygote.fill_pools(dense_run=4)
    last = fillers[-5:]  # the 512-byte class's, the last one filled
    assert all(isinstance(b, bytes) and len(b) == 512 - 33 for b in last)
    assert [id(b) - id(last[0]) for b in last] == [0, 512, 1024, 1536, 2048]


def test_the_digest_covers_every_source_of_the_package(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "forkserver"
    shutil.copytree(local.FORKSERVER, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(local, "FORKSERVER", copy)
    before = local.server_digest()
    assert before == local.server_digest()
    for name in ("callsetup.h", "callsetup.c", "zygote.py"):
        with open(copy / name, "a") as fh:
            fh.write("\n")
        after = local.server_digest()
        assert after != before, name
        before = after


def test_user_code_cannot_import_the_fork_server(sandbox: Sandbox) -> None:
    result = sandbox.run("import forkserver")
    assert result.exit_code == 1 and "ModuleNotFoundError" in result.stderr
    result = sandbox.run("import sys; print(sorted(m for m in sys.modules if 'forkserver' in m or 'abi' == m))")
    assert result.stdout == "[]\n"
