"""Type-preserving JSON: task rows and verifier requests keep tuples, sets and non-string dict keys.

Some scorers (reasoning-gym's) compare with tuples, so a row's metadata must come back from JSON as it went in.
:func:`to_json` tags what plain JSON would change; :func:`from_json` undoes it. Standard library only: the
verifier worker process (``_worker_main.py``) loads this file by path without importing gym_nemo.

>>> to_json({"pair": (1, 2), 3: {"a"}})
{'__items__': [['pair', {'__tuple__': [1, 2]}], [3, {'__set__': ['a']}]]}
>>> from_json(to_json({"pair": (1, 2), 3: {"a"}}))
{'pair': (1, 2), 3: {'a'}}
"""

from __future__ import annotations

import json
from typing import Any

_TAGS = ("__tuple__", "__set__", "__items__")


def to_json(value: Any) -> Any:
    """``value`` as plain JSON data that :func:`from_json` turns back into equal Python data: tuples, sets and
    dicts with non-string keys are tagged (``{"__tuple__": [...]}``); plain JSON data comes out unchanged."""
    if isinstance(value, tuple):
        return {"__tuple__": [to_json(v) for v in value]}
    if isinstance(value, (set, frozenset)):
        return {"__set__": sorted((to_json(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not (len(value) == 1 and next(iter(value)) in _TAGS):
            return {k: to_json(v) for k, v in value.items()}
        return {"__items__": [[to_json(k), to_json(v)] for k, v in value.items()]}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return to_json(item())
    raise TypeError(f"cannot store a {type(value).__name__} in a task row")


def from_json(value: Any) -> Any:
    """The inverse of :func:`to_json`."""
    if isinstance(value, list):
        return [from_json(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1:
            (tag, inner), *_ = value.items()
            if tag == "__tuple__":
                return tuple(from_json(v) for v in inner)
            if tag == "__set__":
                return {_hashable(from_json(v)) for v in inner}
            if tag == "__items__":
                return {_hashable(from_json(k)): from_json(v) for k, v in inner}
        return {k: from_json(v) for k, v in value.items()}
    return value


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value
