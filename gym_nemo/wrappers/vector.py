"""``make_vec``: vectorized text envs with the settings multi-turn LLM episodes need."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
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

    Examples:
        >>> import gym_nemo
        >>> envs = gym_nemo.make_vec("nemo/TargetChar-v0", num_envs=2, vectorization_mode="sync")
        >>> obs, infos = envs.reset(seed=0)
        >>> obs[0]
        'You are a helpful assistant.\\n\\nReply with the letter t repeated, nothing else.'
        >>> obs, rewards, terminated, truncated, infos = envs.step(["tttt", "a"])
        >>> rewards.tolist(), terminated.tolist()
        ([1.0, 0.0], [True, True])
        >>> infos["final_obs"][0]  # the finished episode's last observation; obs[0] is already the next prompt
        "[verdict] 100% of the characters are 't'"
        >>> envs.close()
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
    """The info dict of sub-env ``index`` out of a vector env's batched info (arrays + ``_key`` masks).

    Examples:
        >>> import numpy as np
        >>> info = {"turn": np.array([1, 2]), "_turn": np.array([True, True]),
        ...         "verdict": np.array([None, "v"]), "_verdict": np.array([False, True])}
        >>> unbatch_info(info, 0), unbatch_info(info, 1)
        ({'turn': np.int64(1)}, {'turn': np.int64(2), 'verdict': 'v'})
    """
    out: dict[str, Any] = {}
    for key, value in info.items():
        if key.startswith("_"):
            continue
        mask = info.get("_" + key)
        if mask is not None and not mask[index]:
            continue
        # arrays first: most values are, and the Mapping check (an ABC) costs more than the array check
        nested = not isinstance(value, np.ndarray) and isinstance(value, Mapping)
        out[key] = unbatch_info(value, index) if nested else value[index]
    return out
