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
