"""Old home of :mod:`gym_nemo.wrappers.vector`, kept so ``from gym_nemo.vector import unbatch_info`` still works."""

from gym_nemo.wrappers.vector import make_vec, unbatch_info

__all__ = ["make_vec", "unbatch_info"]
