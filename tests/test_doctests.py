"""The docstrings' ``>>>`` examples run, and the README's first-episode example runs as written.

Each module listed here has examples (a module whose examples vanish fails: ``attempted > 0``). A module
that needs optional packages is skipped with the extra that provides them, never silently passed.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: module -> the optional packages its examples need (besides its own imports), and the extra providing them.
MODULES: dict[str, tuple[tuple[str, ...], str]] = {
    "gym_nemo.core.errors": ((), ""),
    "gym_nemo.core.tool_calls": ((), ""),
    "gym_nemo.wrappers.vector": ((), ""),
    "gym_nemo.wrappers.token_env": (("transformers", "tokenizers"), "hf"),
    "gym_nemo.sandbox": ((), ""),
    "gym_nemo.policies.reference": ((), ""),
    "gym_nemo.policies.factory": ((), ""),
    "gym_nemo.rollout.engine": ((), ""),
    "gym_nemo.rollout.collect": ((), ""),
    "gym_nemo.rollout.records": ((), ""),
    "gym_nemo.tracking.batch": ((), ""),
    "gym_nemo.rollout.token_rollout": (("transformers", "tokenizers"), "hf"),
    "gym_nemo.rollout.async_collector": (("transformers", "tokenizers"), "hf"),
    "gym_nemo.eval.metrics": ((), ""),
    "gym_nemo.integrations.nemo_gym": ((), ""),
    "gym_nemo.nemo_gym.judge": (("httpx",), "nemo-gym"),
    "gym_nemo.verifiers.json_codec": ((), ""),
}

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.mark.parametrize("name", sorted(MODULES))
def test_docstring_examples(name: str) -> None:
    needs, extra = MODULES[name]
    missing = [package for package in needs if importlib.util.find_spec(package) is None]
    if missing:
        pytest.skip(f"{name}'s examples need {', '.join(missing)}: pip install 'gym-nemo[{extra}]'")
    try:
        module = importlib.import_module(name)
    except ImportError as exc:  # MissingDependency is an ImportError and names its extra
        pytest.skip(f"{name} cannot be imported here: {exc}")
    result = doctest.testmod(module, optionflags=FLAGS, verbose=False)
    assert result.attempted > 0, f"{name} has no >>> examples; remove it from MODULES or add them"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name} (output above)"


def test_readme_example_runs_as_written() -> None:
    """The README's 'A first episode' block: it runs, and what its comments say holds."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## A first episode\n\n```python\n(.*?)^```$", readme, flags=re.S | re.M)
    assert match, "README.md lost its '## A first episode' python block"
    code = match.group(1)
    assert len(code.splitlines()) <= 25, "the README example should stay short"
    namespace: dict = {"__name__": "readme_example"}
    try:
        exec(compile(code, "README.md", "exec"), namespace)
    finally:
        for name in ("env", "envs"):
            if name in namespace:
                namespace[name].close()
    assert namespace["r"] == 1.0 and namespace["term"] is True
    assert namespace["obs"].startswith("[verdict]")
    assert namespace["summary"].episodes == 16
