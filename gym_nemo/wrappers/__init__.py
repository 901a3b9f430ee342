"""Wrappers over text envs: ``TokenEnv`` makes observations and actions token-id sequences; ``make_vec`` runs
copies of an env as one Gymnasium vector env."""

from gym_nemo.wrappers.token_env import TokenEnv
from gym_nemo.wrappers.vector import make_vec, unbatch_info

__all__ = ["TokenEnv", "make_vec", "unbatch_info"]
