"""Wrappers over text envs: ``TokenEnv`` makes observations and actions token-id sequences."""

from gym_nemo.wrappers.token_env import TokenEnv

__all__ = ["TokenEnv"]
