import gymnasium as gym
import pytest

import gym_nemo  # noqa: F401  (registers the envs)
from gym_nemo.envs.code_exec import CodeExecEnv
from gym_nemo.sandbox import Sandbox
from tests.sandboxes import BACKENDS, make_backend


@pytest.fixture(params=BACKENDS)
def sandbox(request: pytest.FixtureRequest) -> Sandbox:
    """Every sandbox backend in turn (unavailable ones skip with the reason)."""
    return make_backend(request.param)


@pytest.fixture(scope="session")
def code_env() -> CodeExecEnv:
    env = CodeExecEnv(timeout_s=5)
    yield env
    env.close()


@pytest.fixture
def fresh_code_env():
    env = gym.make("nemo/CodeExec-v0", timeout_s=5)
    yield env
    env.close()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory):
    """The tiny random-init model and tokenizer (ChatML template), built offline once per session (~5 s)."""
    pytest.importorskip("transformers")
    from gym_nemo.testing.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_model") / "chatml", "chatml")


@pytest.fixture(scope="session")
def policy(tiny_model_dir):
    """An ``HFPolicy`` over the tiny model (token-level tests)."""
    from gym_nemo.policies import HFPolicy

    return HFPolicy(tiny_model_dir)


@pytest.fixture(scope="session")
def tools() -> list[dict]:
    """CodeExec's tool schemas, as TokenEnv passes them to chat templates."""
    env = gym.make("nemo/CodeExec-v0", timeout_s=5)
    try:
        return env.unwrapped.tools
    finally:
        env.close()


@pytest.fixture(scope="session")
def transformers_server(tmp_path_factory: pytest.TempPathFactory):
    """A real OpenAI-compatible server on 127.0.0.1: ``transformers serve`` (no preloaded model: a request's
    ``model`` is a local model directory, loaded on first use). Yields the base URL; stopped by its PID."""
    import os
    import shutil
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    pytest.importorskip("fastapi", reason="transformers serve needs fastapi")
    pytest.importorskip("uvicorn", reason="transformers serve needs uvicorn")
    cli = Path(sys.executable).parent / "transformers"
    if not cli.exists() and shutil.which("transformers") is None:
        pytest.skip("the transformers CLI is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tmp_path_factory.mktemp("transformers_serve")
    log = open(workdir / "serve.log", "wb")  # noqa: SIM115 - closed below
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(workdir / "hf"))
    command = [str(cli) if cli.exists() else "transformers", "serve", "--device", "cpu", "--host", "127.0.0.1"]
    proc = subprocess.Popen(
        [*command, "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"transformers serve exited ({proc.returncode}): {(workdir / 'serve.log').read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("transformers serve did not answer /health within 120 s")
            time.sleep(0.3)
        yield f"{url}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
