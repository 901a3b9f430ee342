"""Every registered env passes Gymnasium's own checker (new envs are covered automatically)."""

import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

from gym_nemo import ENVS
from gym_nemo.core.spaces import UnicodeText

# nemo/Remote-v0 needs a running server (url=...); tests/test_remote_env.py runs check_env on it against one.
LOCAL_ENVS = sorted(k for k in ENVS if k != "nemo/Remote-v0")


@pytest.mark.parametrize("env_id", LOCAL_ENVS)
def test_check_env(env_id: str) -> None:
    env = gym.make(env_id)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a checker warning is a failure here
            check_env(env.unwrapped, skip_render_check=False)
        assert isinstance(env.observation_space, UnicodeText)
        assert isinstance(env.action_space, UnicodeText)
        assert env.spec is not None and env.spec.max_episode_steps is not None
    finally:
        env.close()


@pytest.mark.parametrize("env_id", LOCAL_ENVS)
def test_module_prefixed_id_imports_the_package(env_id: str) -> None:
    env = gym.make(f"gym_nemo:{env_id}")
    obs, info = env.reset(seed=0)
    assert isinstance(obs, str) and obs
    assert {"messages", "tools", "task_id"} <= set(info)
    env.close()
