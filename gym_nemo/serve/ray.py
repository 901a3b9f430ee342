"""Env workers as Ray actors: each actor owns one env (and so its sandbox sessions, on the actor's node).

- :func:`make_ray_vec` returns :class:`RayVectorEnv`, a gymnasium ``VectorEnv`` that steps all its actors in
  parallel (``SAME_STEP`` autoreset, ``final_obs``/``final_info`` as :func:`gym_nemo.make_vec` gives them),
  so :func:`gym_nemo.rollout.collect_rollouts` runs on a cluster unchanged.
- :class:`RayEnv` is one actor behind a plain ``gymnasium.Env``: give
  :func:`~gym_nemo.rollout.collect_token_rollouts_async` ``env_fn=lambda: TokenEnv(RayEnv(env_id), tok)``.

An actor that dies (its node lost, the process killed) or a call past ``call_timeout_s`` ends that env's
episode with ``truncated=True`` and ``info["infra_error"]``; a fresh actor replaces it. Ray is joined with
:func:`connect`: ``address=None`` uses ``RAY_ADDRESS`` or an already-initialised Ray, else starts a local
one; ``"auto"`` joins the cluster this node belongs to (``ray start --head`` / ``ray start --address``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import ray
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

_LOST = (RayActorError, GetTimeoutError)


def connect(address: str | None = None, **init_kwargs: Any) -> None:
    """Join (or start) Ray once per process; ``init_kwargs`` go to ``ray.init`` when this call starts it."""
    if not ray.is_initialized():
        ray.init(address=address, **init_kwargs)


class EnvWorker:
    """The actor: one env built on its node; ``step`` resets in the same call when an episode ends."""

    def __init__(self, env_id: str, env_kwargs: dict[str, Any]) -> None:
        import gym_nemo  # noqa: F401  (registers the envs in the actor's process)

        self.env = gym.make(env_id, **env_kwargs)

    def spaces(self) -> tuple[gym.Space, gym.Space, dict[str, Any]]:
        return self.env.observation_space, self.env.action_space, dict(self.env.metadata)

    def reset(self, seed: int | None, options: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any, autoreset: bool) -> tuple[Any, ...]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if autoreset and (terminated or truncated):
            next_obs, next_info = self.env.reset()
            return next_obs, reward, terminated, truncated, next_info, (obs, info)
        return obs, reward, terminated, truncated, info, None

    def where(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def close(self) -> None:
        self.env.close()


def _actor(env_id: str, env_kwargs: dict[str, Any], num_cpus: float) -> Any:
    return ray.remote(num_cpus=num_cpus, max_restarts=0)(EnvWorker).remote(env_id, env_kwargs)


def _lost_reply(error: BaseException, what: str) -> dict[str, Any]:
    return {"infra_error": f"env worker {what}: {type(error).__name__}: {str(error).splitlines()[0][:300]}"}


class RayVectorEnv(VectorEnv):
    """``num_envs`` copies of ``env_id``, one per Ray actor, stepped in parallel (see the module docstring)."""

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        *,
        env_kwargs: dict[str, Any] | None = None,
        num_cpus_per_env: float = 0.5,
        call_timeout_s: float | None = 600.0,
    ) -> None:
        connect()
        self.env_id, self.env_kwargs = env_id, dict(env_kwargs or {})
        self.num_envs, self.num_cpus_per_env, self.call_timeout_s = num_envs, num_cpus_per_env, call_timeout_s
        self.actors = [_actor(env_id, self.env_kwargs, num_cpus_per_env) for _ in range(num_envs)]
        obs_space, act_space, env_metadata = ray.get(self.actors[0].spaces.remote(), timeout=call_timeout_s)
        self.single_observation_space, self.single_action_space = obs_space, act_space
        self.observation_space = batch_space(obs_space, num_envs)
        self.action_space = batch_space(act_space, num_envs)
        self.metadata = {**env_metadata, "autoreset_mode": AutoresetMode.SAME_STEP}
        self._last_info: list[dict[str, Any]] = [{} for _ in range(num_envs)]

    def _gather(self, futures: Sequence[Any]) -> list[Any]:
        """Each future's result, or the exception that says its actor is lost."""
        out: list[Any] = []
        for future in futures:
            try:
                out.append(ray.get(future, timeout=self.call_timeout_s))
            except _LOST as exc:
                out.append(exc)
        return out

    def _replace(self, index: int) -> None:
        ray.kill(self.actors[index], no_restart=True)
        self.actors[index] = _actor(self.env_id, self.env_kwargs, self.num_cpus_per_env)

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else seed
        seeds = list(seeds) if seeds is not None else [None] * self.num_envs
        results = self._gather([a.reset.remote(s, options) for a, s in zip(self.actors, seeds, strict=True)])
        observations: list[Any] = []
        infos: dict[str, Any] = {}
        for i, result in enumerate(results):
            if isinstance(result, BaseException):  # a worker that cannot even reset: replace it and try once more
                self._replace(i)
                result = ray.get(self.actors[i].reset.remote(seeds[i], options), timeout=self.call_timeout_s)
            obs, info = result
            observations.append(obs)
            self._last_info[i] = info
            infos = self._add_info(infos, info, i)
        return tuple(observations), infos

    def step(self, actions: Sequence[Any]) -> tuple[tuple[Any, ...], np.ndarray, np.ndarray, np.ndarray, dict]:
        results = self._gather([a.step.remote(act, True) for a, act in zip(self.actors, actions, strict=True)])
        observations: list[Any] = []
        rewards = np.zeros(self.num_envs)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        infos: dict[str, Any] = {}
        for i, result in enumerate(results):
            if isinstance(result, BaseException):
                final_info = {
                    **_lost_reply(result, "lost"),
                    "task_id": self._last_info[i].get("task_id", ""),
                    "messages": list(self._last_info[i].get("messages", [])),
                    "turn": int(self._last_info[i].get("turn", 0)) + 1,
                }
                self._replace(i)
                obs, info = ray.get(self.actors[i].reset.remote(None, None), timeout=self.call_timeout_s)
                result = (
                    obs,
                    0.0,
                    False,
                    True,
                    info,
                    (f"[infrastructure error] {final_info['infra_error']}", final_info),
                )
            obs, reward, term, trunc, info, final = result
            observations.append(obs)
            rewards[i], terminated[i], truncated[i] = reward, term, trunc
            if final is not None:
                infos = self._add_info(infos, {"final_obs": final[0], "final_info": final[1]}, i)
            self._last_info[i] = info
            infos = self._add_info(infos, info, i)
        return tuple(observations), rewards, terminated, truncated, infos

    def close_extras(self, **kwargs: Any) -> None:
        for actor in self.actors:
            try:
                ray.get(actor.close.remote(), timeout=30)
            except (*_LOST, RayTaskError):
                pass
            ray.kill(actor, no_restart=True)


def make_ray_vec(env_id: str, num_envs: int, *, num_cpus_per_env: float = 0.5, **env_kwargs: Any) -> RayVectorEnv:
    """:class:`RayVectorEnv` over ``num_envs`` actors, the counterpart of :func:`gym_nemo.make_vec`."""
    return RayVectorEnv(env_id, num_envs, env_kwargs=env_kwargs, num_cpus_per_env=num_cpus_per_env)


class RayEnv(gym.Env):
    """One env in a Ray actor, as a ``gymnasium.Env`` (for the async collector's ``env_fn``)."""

    def __init__(self, env_id: str, *, num_cpus: float = 0.5, call_timeout_s: float | None = 600.0, **env_kwargs: Any):
        connect()
        self.env_id, self.env_kwargs, self.num_cpus, self.call_timeout_s = env_id, env_kwargs, num_cpus, call_timeout_s
        self.actor = _actor(env_id, env_kwargs, num_cpus)
        self.observation_space, self.action_space, self.metadata = ray.get(
            self.actor.spaces.remote(), timeout=call_timeout_s
        )
        self._info: dict[str, Any] = {}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        try:
            obs, info = ray.get(self.actor.reset.remote(seed, options), timeout=self.call_timeout_s)
        except _LOST:  # replace a lost worker once; a second loss is raised
            ray.kill(self.actor, no_restart=True)
            self.actor = _actor(self.env_id, self.env_kwargs, self.num_cpus)
            obs, info = ray.get(self.actor.reset.remote(seed, options), timeout=self.call_timeout_s)
        self._info = info
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        try:
            obs, reward, terminated, truncated, info, _ = ray.get(
                self.actor.step.remote(action, False), timeout=self.call_timeout_s
            )
        except _LOST as exc:
            info = {
                **_lost_reply(exc, "lost"),
                "task_id": self._info.get("task_id", ""),
                "messages": list(self._info.get("messages", [])),
                "turn": int(self._info.get("turn", 0)) + 1,
            }
            ray.kill(self.actor, no_restart=True)
            self.actor = _actor(self.env_id, self.env_kwargs, self.num_cpus)
            return f"[infrastructure error] {info['infra_error']}", 0.0, False, True, info
        self._info = info
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        try:
            ray.get(self.actor.close.remote(), timeout=30)
        except (*_LOST, RayTaskError):
            pass
        ray.kill(self.actor, no_restart=True)
