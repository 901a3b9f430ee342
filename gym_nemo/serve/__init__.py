"""Scale-out: envs as HTTP resource servers, remote envs over HTTP, env workers as Ray actors.

- :mod:`gym_nemo.serve.server`: ``gym-nemo serve ENV_ID``, an ASGI app (FastAPI on uvicorn) hosting many
  sessions of one registered env, plus NeMo Gym's resources-server routes (``/seed_session``, ``/verify``,
  one route per tool).
- :mod:`gym_nemo.serve.remote`: ``RemoteEnv`` (``gym.make("nemo/Remote-v0", url=..., env_id=...)``), a
  ``gymnasium.Env`` whose episodes run on such a server.
- :mod:`gym_nemo.serve.ray`: env workers as Ray actors behind a vector env (``make_ray_vec``) or one env
  (``RayEnv``).

Each needs the ``[serve]`` extra (``[ray]`` for Ray); nothing below ``serve`` imports it.
"""
