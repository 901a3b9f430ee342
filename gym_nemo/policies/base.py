"""The text-level policy protocol used by the rollout collector."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class TextPolicy(Protocol):
    """Maps a batch of observations (with each env's info) to a batch of assistant messages."""

    name: str

    def act(self, observations: Sequence[str], infos: Sequence[Mapping[str, Any]]) -> list[str]: ...
