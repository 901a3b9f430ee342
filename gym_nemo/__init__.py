"""gym_nemo: NeMo Gym-style resource servers (tasks + tools + verifiers) as ``gymnasium`` environments.

``import gym_nemo`` registers every environment in the ``nemo`` namespace (``gym.make("nemo/CodeExec-v0")``);
``gym.make("gym_nemo:nemo/CodeExec-v0")`` works without the import.
"""

from gym_nemo._version import __version__
from gym_nemo.core import Task, TextEnv, UnicodeText, Verdict
from gym_nemo.registry import ENVS, register_all
from gym_nemo.wrappers.vector import make_vec

register_all()

__all__ = ["ENVS", "Task", "TextEnv", "UnicodeText", "Verdict", "__version__", "make_vec"]
