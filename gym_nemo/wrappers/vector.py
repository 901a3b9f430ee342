"""``make_vec``: vectorized text envs with the settings multi-turn LLM episodes need."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
from gymnasium.vector import AutoresetMode, VectorEnv


def make_vec(
    env_id: str,
    /,
    num_envs: int,
    vectorization_mode: str = "async",
    *,
    vector_kwargs: dict[str, Any] | None = None,
    **env_kwargs: Any,
) -> VectorEnv:
    """A Gymnasium vector env over ``num_envs`` copies of ``env_id``.

    Always ``shared_memory=False``: Gymnasium's shared memory silently returns stale observations for
    text spaces. Autoreset is ``SAME_STEP``: the step that ends an episode already returns the next
    task's prompt (the finished episode's last observation and info are in ``info["final_obs"]`` and
    ``info["final_info"]``). With the default ``NEXT_STEP`` mode every finished episode would cost the
    policy one generation whose output is thrown away; with ``SAME_STEP`` every observation is one the
    policy should answer.

    ``env_id`` is positional-only, so an env that itself takes ``env_id=`` gets it through ``env_kwargs``:
    ``make_vec("nemo/Remote-v0", 8, url=..., env_id="nemo/Math-v0")``.
    """
    if vectorization_mode not in ("async", "sync"):
        raise ValueError(f"vectorization_mode must be 'async' or 'sync', got {vectorization_mode!r}")
    kwargs: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP}
    if vectorization_mode == "async":
        kwargs["shared_memory"] = False
    kwargs.update(vector_kwargs or {})
    if kwargs.get("shared_memory"):
        raise ValueError("shared_memory=True corrupts text observations; gym_nemo always uses False")
    return gym.make_vec(
        env_id, num_envs=num_envs, vectorization_mode=vectorization_mode, vector_kwargs=kwargs, **env_kwargs
    )


def unbatch_info(info: Mapping[str, Any], index: int) -> dict[str, Any]:
    """The info dict of sub-env ``index`` out of a vector env's batched info (arrays + ``_key`` masks)."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        if key.startswith("_"):
            continue
        mask = info.get(f"_{key}")
        if mask is not None and not mask[index]:
            continue
        out[key] = unbatch_info(value, index) if isinstance(value, Mapping) else value[index]
    return out
