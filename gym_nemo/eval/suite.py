"""Evaluation suites: which envs, which tasks, how many samples per task, how to sample, which seed.

A suite is a YAML file. Shipped suites (``gym_nemo/eval/suites/*.yaml``) are named by their file stem
(``default``, ``quick``); any other path works too::

    name: quick
    seed: 0
    k: 2                  # samples per task (pass@k up to k); an env entry may override it
    tasks: 4              # per env: an int (a seeded sample of that many, or the whole pool if smaller),
                          # a list of task ids, or "all"
    concurrency: 8        # episodes in flight per env
    sampling: {max_tokens: 256, temperature: 0.0, top_p: 1.0}
    envs:                 # "all" (every registered env that builds without arguments) or a list
      - nemo/CodeExec-v0
      - {env: nemo/ReasoningGym-v0, name: ReasoningGym-gcd, kwargs: {dataset: gcd, size: 50}, tasks: 8, k: 4}

Task subsets are drawn from the env's whole pool with a generator seeded by the suite seed and the entry's
name, so the same suite file names the same tasks on every machine.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

SAMPLING_KEYS = ("max_tokens", "temperature", "top_p", "top_k")
SUITE_KEYS = {"name", "description", "seed", "k", "tasks", "concurrency", "sampling", "envs"}
ENTRY_KEYS = {"env", "name", "kwargs", "tasks", "k"}


class SuiteError(ValueError):
    """A suite file that cannot be used, with what is wrong in it."""


@dataclass(frozen=True)
class EnvEntry:
    """One env of a suite: its id, a unique name (the rollout file's name), env kwargs, task subset and k."""

    env_id: str
    name: str
    kwargs: dict[str, Any]
    tasks: int | list[str] | None  # None: the whole pool
    k: int
    optional: bool = False  # from ``envs: all``: skipped (and said so) when it needs arguments or has nothing to play

    def select_tasks(self, pool_ids: Sequence[str], seed: int) -> list[str]:
        """The task ids this entry plays, in pool order: all, the listed ones, or a seeded sample (of at most the
        pool: ``tasks: 16`` over a 5-task pool plays all 5, so ``envs: all`` suites work for small envs)."""
        if self.tasks is None:
            return list(pool_ids)
        if isinstance(self.tasks, list):
            unknown = sorted(set(self.tasks) - set(pool_ids))
            if unknown:
                raise SuiteError(f"{self.name}: unknown task ids {unknown[:5]}")
            return list(self.tasks)
        if self.tasks >= len(pool_ids):
            return list(pool_ids)
        rng = np.random.default_rng([seed, zlib.crc32(self.name.encode())])
        picked = sorted(rng.choice(len(pool_ids), size=self.tasks, replace=False).tolist())
        return [pool_ids[i] for i in picked]


@dataclass(frozen=True)
class Suite:
    """A parsed suite (see the module docstring). ``source`` is the file it came from."""

    name: str
    seed: int
    sampling: dict[str, Any]
    concurrency: int
    envs: list[EnvEntry]
    description: str = ""
    source: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def with_overrides(self, *, seed: int | None = None, sampling: Mapping[str, Any] | None = None) -> Suite:
        """The same suite with another seed and/or some sampling settings replaced (the CLI's flags)."""
        new_sampling = {**self.sampling, **{k: v for k, v in (sampling or {}).items() if v is not None}}
        return replace(self, seed=self.seed if seed is None else seed, sampling=new_sampling)


def shipped_suites() -> dict[str, Path]:
    """The suites shipped with the package, by name."""
    folder = resources.files("gym_nemo.eval") / "suites"
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def load_suite(name_or_path: str | Path) -> Suite:
    """A shipped suite by name (``default``, ``quick``) or a suite file by path."""
    import yaml

    path = Path(name_or_path)
    shipped = shipped_suites()
    if not path.exists():
        if str(name_or_path) not in shipped:
            raise SuiteError(f"no suite file {str(name_or_path)!r}; shipped suites: {', '.join(sorted(shipped))}")
        path = shipped[str(name_or_path)]
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SuiteError(f"{path}: not valid YAML: {exc}") from exc
    return parse_suite(raw, source=str(path))


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SuiteError(f"{what} must be a positive integer, got {value!r}")
    return value


def _tasks(value: Any, what: str) -> int | list[str] | None:
    if value is None or value == "all":
        return None
    if isinstance(value, list) and value and all(isinstance(t, str) for t in value):
        return list(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise SuiteError(f"{what} must be a positive integer, a non-empty list of task ids or 'all', got {value!r}")


def parse_suite(raw: Any, *, source: str = "") -> Suite:
    """Validate a suite mapping (as loaded from YAML) and resolve ``envs: all`` against the registry."""
    from gym_nemo.registry import ENVS

    if not isinstance(raw, dict):
        raise SuiteError(f"{source or 'suite'}: the top level must be a mapping")
    unknown = set(raw) - SUITE_KEYS
    if unknown:
        raise SuiteError(f"{source}: unknown keys {sorted(unknown)}; allowed: {sorted(SUITE_KEYS)}")
    name = str(raw.get("name") or Path(source).stem or "suite")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SuiteError(f"{source}: seed must be a non-negative integer, got {seed!r}")
    k = _positive_int(raw.get("k", 1), f"{source}: k")
    tasks = _tasks(raw.get("tasks", "all"), f"{source}: tasks")
    sampling = dict(raw.get("sampling") or {})
    bad = set(sampling) - set(SAMPLING_KEYS)
    if bad:
        raise SuiteError(f"{source}: unknown sampling keys {sorted(bad)}; allowed: {list(SAMPLING_KEYS)}")
    envs_raw = raw.get("envs", "all")
    every_env = envs_raw == "all"
    if every_env:
        envs_raw = list(ENVS)
    if not isinstance(envs_raw, list) or not envs_raw:
        raise SuiteError(f"{source}: envs must be 'all' or a non-empty list")
    entries: list[EnvEntry] = []
    for item in envs_raw:
        spec = {"env": item} if isinstance(item, str) else item
        if not isinstance(spec, dict) or "env" not in spec:
            raise SuiteError(f"{source}: each env entry is an env id or a mapping with 'env', got {item!r}")
        extra = set(spec) - ENTRY_KEYS
        if extra:
            raise SuiteError(f"{source}: entry {spec['env']!r} has unknown keys {sorted(extra)}")
        env_id = str(spec["env"])
        if env_id not in ENVS:
            raise SuiteError(f"{source}: unknown env {env_id!r}; `gym-nemo list` shows the registered ones")
        kwargs = spec.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise SuiteError(f"{source}: kwargs of {env_id!r} must be a mapping")
        entries.append(
            EnvEntry(
                env_id=env_id,
                name=str(spec.get("name") or env_id.split("/", 1)[-1]),
                kwargs=dict(kwargs),
                tasks=_tasks(spec.get("tasks", tasks), f"{source}: tasks of {env_id!r}"),
                k=_positive_int(spec.get("k", k), f"{source}: k of {env_id!r}"),
                optional=every_env,
            )
        )
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise SuiteError(f"{source}: entry names must be unique (set 'name:'), got {names}")
    return Suite(
        name=name,
        seed=seed,
        sampling=sampling,
        concurrency=_positive_int(raw.get("concurrency", 8), f"{source}: concurrency"),
        envs=entries,
        description=str(raw.get("description", "")),
        source=source,
        raw=raw,
    )
