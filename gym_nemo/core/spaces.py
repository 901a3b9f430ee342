"""Text spaces for LLM environments.

Gymnasium's ``spaces.Text`` only admits ``[0-9A-Za-z]`` by default, so a prompt with a space or a
newline is "outside" the space, and a full-Unicode charset is too slow to build and pickle.
``UnicodeText`` keeps ``Text``'s interface (and so ``check_env``, vector batching and pickling) but
accepts any ``str`` up to ``max_length`` characters.
"""

from __future__ import annotations

import string
from typing import Any

import numpy as np
from gymnasium import spaces

# What ``sample()`` draws from: printable ASCII, whitespace that matters in code and chat, and a few
# multi-byte characters so samplers exercise UTF-8 handling. ``contains`` accepts every character.
SAMPLE_CHARSET = string.printable + "éßπ中文😀\u200b"


class UnicodeText(spaces.Text):
    """A ``gymnasium.spaces.Text`` whose members are all ``str`` of length ``min_length..max_length``."""

    def __init__(
        self,
        max_length: int,
        *,
        min_length: int = 0,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        super().__init__(max_length, min_length=min_length, charset=SAMPLE_CHARSET, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        """A random string; lengths are capped at 256 so sampling a 1 MB space stays cheap."""
        if mask is not None or probability is not None:
            return super().sample(mask=mask, probability=probability)
        length = int(self.np_random.integers(self.min_length, max(self.min_length, min(self.max_length, 256)) + 1))
        idx = self.np_random.integers(0, len(SAMPLE_CHARSET), size=length)
        return "".join(SAMPLE_CHARSET[i] for i in idx)

    def __repr__(self) -> str:
        return f"UnicodeText({self.min_length}, {self.max_length})"

    def __eq__(self, other: Any) -> bool:
        return (
            isinstance(other, UnicodeText)
            and self.min_length == other.min_length
            and self.max_length == other.max_length
        )

    __hash__ = None  # type: ignore[assignment]  # mutable RNG state, like gymnasium's spaces
