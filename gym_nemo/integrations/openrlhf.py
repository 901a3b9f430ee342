"""OpenRLHF agent adapter: any ``nemo/*`` env as the ``AgentExecutor`` of ``--train.agent_func_path``.

OpenRLHF (0.11.x) loads the file given as ``--train.agent_func_path``, instantiates its ``AgentExecutor`` class
with no arguments and calls ``execute(prompt, label, sampling_params, max_length, hf_tokenizer, llm_engine)`` once
per sample. :class:`NemoAgentExecutor` is built on OpenRLHF's own ``MultiTurnAgentExecutor`` (which keeps the
token stream, action ranges and rollout logprobs) with an ``AgentInstanceBase`` that plays one env episode
through :class:`~gym_nemo.wrappers.TokenEnv`:

* the dataset's ``label`` is the task id (``write_prompts`` writes such a JSONL); ``reset`` starts the env on it
  and returns the chat template's rendering of the env's prompt (tools included), whose tokenization is exactly
  TokenEnv's prompt ids;
* each turn the env is stepped with the **token ids vLLM sampled** (read from the engine's output, never
  re-tokenized from ``action_text``), and the feedback returned is TokenEnv's delta text, which OpenRLHF
  tokenizes back into exactly TokenEnv's delta ids: the stream OpenRLHF trains on equals TokenEnv's;
* the sampling params get the template's end-of-turn token (and the tokenizer's eos) as ``stop_token_ids``:
  OpenRLHF sets ``max_tokens`` to the remaining context each turn, so only a stop token ends a turn;
* ``rewards`` is the step's env reward, ``scores`` the episode return; ``extra_logs`` has ``turns`` and
  ``infra_error`` (1.0 when the env reported an infrastructure failure: OpenRLHF has no way to drop a sample,
  so filter on it or watch the rate); env calls run in worker threads so concurrent episodes overlap.

Use: ``GYM_NEMO_ENV=nemo/CodeExec-v0 ... --train.agent_func_path $(python -c "import gym_nemo.integrations.openrlhf
as m; print(m.__file__)")``, or a file of your own that subclasses :class:`NemoAgentExecutor` as ``AgentExecutor``
with ``env_id``/``env_kwargs`` set (see ``examples/openrlhf_agent.py``). ``GYM_NEMO_ENV_KWARGS`` takes JSON.
Needs OpenRLHF importable (``openrlhf.utils.agent``): on a GPU machine ``pip install openrlhf``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
from openrlhf.utils.agent import AgentInstanceBase, MultiTurnAgentExecutor

import gym_nemo  # noqa: F401  (registers the nemo/* envs)
from gym_nemo.rollout.engine import EpisodeTrace
from gym_nemo.wrappers.token_env import TokenEnv

ENV_ID_VAR = "GYM_NEMO_ENV"
ENV_KWARGS_VAR = "GYM_NEMO_ENV_KWARGS"


def write_prompts(env_id: str, path: str | Path, *, env_kwargs: Mapping[str, Any] | None = None) -> int:
    """Write one JSONL row per task of ``env_id``: ``{"prompt": messages, "label": task_id}``; return the count.

    Train with ``--data.input_key prompt --data.label_key label --data.apply_chat_template``: the env replaces the
    prompt by its own rendering on ``reset``, so only the label (the task id) matters.
    """
    env = gym.make(env_id, **dict(env_kwargs or {}))
    try:
        with open(path, "w", encoding="utf-8") as fh:
            for i in range(len(env.unwrapped.tasks)):
                _, info = env.reset(options={"task_index": i})
                fh.write(json.dumps({"prompt": info["messages"], "label": str(info["task_id"])}) + "\n")
        return len(env.unwrapped.tasks)
    finally:
        env.close()


class _RecordingEngine:
    """The engine OpenRLHF passes in, keeping the last output so the agent can step with its exact token ids."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.last_output: Any = None

    async def generate(self, prompt_token_ids: list[int], sampling_params: Any, multi_modal_data: Any = None) -> Any:
        self.last_output = await self.engine.generate(prompt_token_ids, sampling_params, multi_modal_data)
        return self.last_output


class NemoAgentInstance(AgentInstanceBase):
    """One episode of a gym_nemo env (bound to its executor and engine by :class:`NemoAgentExecutor`)."""

    executor: ClassVar[NemoAgentExecutor]
    engine: ClassVar[_RecordingEngine]
    tokenizer: ClassVar[Any]
    instances: ClassVar[list[NemoAgentInstance]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.env: TokenEnv | None = None
        self.trace = EpisodeTrace(self.executor.env_id, "openrlhf")
        self.instances.append(self)

    async def reset(self, states: dict, **kwargs: Any) -> dict:
        task_id = states.get("label")
        if not task_id:
            raise ValueError("the sample has no label: use the task id as the label (see write_prompts)")
        self.env = self.executor.acquire_env(self.tokenizer)
        obs, info = await asyncio.to_thread(self.env.reset, options={"task_id": str(task_id)})
        self.trace = EpisodeTrace(self.executor.env_id, "openrlhf", task_id=str(task_id))
        self.trace.start(obs, info)
        return {**states, "observation": self._decode(obs)}

    async def step(self, state_dict: dict, **kwargs: Any) -> dict:
        import torch

        assert self.env is not None, "reset() first"
        # OpenRLHF drives this episode (its executor keeps the token stream); the engine's trace keeps its returns.
        action_ids = [int(t) for t in self.engine.last_output.outputs[0].token_ids]
        delta, reward, terminated, truncated, info = await asyncio.to_thread(self.env.step, action_ids)
        self.trace.add_step(delta, float(reward), info)
        return {
            "rewards": torch.tensor(float(reward)),
            "scores": torch.tensor(self.trace.reward),
            "environment_feedback": self._decode(delta),
            "done": bool(terminated or truncated),
            "extra_logs": {"turns": float(self.trace.turns), "infra_error": float(bool(info.get("infra_error")))},
        }

    def _decode(self, ids: Any) -> str:
        return self.tokenizer.decode(
            [int(t) for t in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False
        )


class NemoAgentExecutor(MultiTurnAgentExecutor):
    """OpenRLHF ``AgentExecutor`` for a gym_nemo env (see the module docstring).

    Set ``env_id``/``env_kwargs`` on a subclass, pass them, or set ``GYM_NEMO_ENV``/``GYM_NEMO_ENV_KWARGS``.
    ``end_of_turn`` is the template's end-of-turn token (default: the tokenizer's eos token).
    """

    env_id: ClassVar[str | None] = None
    env_kwargs: ClassVar[Mapping[str, Any]] = {}
    token_env_kwargs: ClassVar[Mapping[str, Any]] = {}

    def __init__(
        self,
        env_id: str | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
        *,
        end_of_turn: str | None = None,
        **token_env_kwargs: Any,
    ) -> None:
        super().__init__(NemoAgentInstance)
        env_id = env_id or self.env_id or os.environ.get(ENV_ID_VAR)
        if not env_id:
            raise ValueError(f"no env: set {ENV_ID_VAR} (e.g. nemo/CodeExec-v0) or subclass with env_id = ...")
        self.env_id = env_id
        if env_kwargs is None:
            env_kwargs = self.env_kwargs or json.loads(os.environ.get(ENV_KWARGS_VAR) or "{}")
        self.env_kwargs = dict(env_kwargs)
        self.token_env_kwargs = {**self.token_env_kwargs, **token_env_kwargs, "end_of_turn": end_of_turn}
        self._idle: list[TokenEnv] = []

    def acquire_env(self, tokenizer: Any) -> TokenEnv:
        """An idle env of this executor (envs are reused across episodes), or a new one."""
        while self._idle:
            env = self._idle.pop()
            if env.tokenizer is tokenizer:
                return env
            env.close()
        return TokenEnv(gym.make(self.env_id, **self.env_kwargs), tokenizer, **self.token_env_kwargs)

    def stop_token_ids(self, tokenizer: Any) -> list[int]:
        """The end-of-turn token's id(s) and the tokenizer's eos id: what ends a turn."""
        end_of_turn = self.token_env_kwargs.get("end_of_turn") or tokenizer.eos_token
        ids = list(tokenizer.encode(end_of_turn, add_special_tokens=False))
        if len(ids) != 1:
            raise ValueError(f"the end-of-turn text {end_of_turn!r} is not one token: {ids}")
        return sorted({ids[0], *([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])})

    async def execute(
        self,
        prompt: Any,
        label: Any,
        sampling_params: Any,
        max_length: int,
        hf_tokenizer: Any,
        llm_engine: Any,
        images: Any = None,
    ) -> dict:
        engine = _RecordingEngine(llm_engine)
        instances: list[NemoAgentInstance] = []
        instance_cls = type(  # OpenRLHF builds the instance with no arguments: bind this call's engine to it
            "BoundNemoAgentInstance",
            (NemoAgentInstance,),
            {"executor": self, "engine": engine, "tokenizer": hf_tokenizer, "instances": instances},
        )
        sampling_params = copy.deepcopy(sampling_params)
        stops = set(getattr(sampling_params, "stop_token_ids", None) or [])
        sampling_params.stop_token_ids = sorted(stops | set(self.stop_token_ids(hf_tokenizer)))
        try:
            return await MultiTurnAgentExecutor(instance_cls).execute(
                prompt, label, sampling_params, max_length, hf_tokenizer, engine, images
            )
        finally:  # the episode's env goes back to the pool, also when the context budget ended it early
            for instance in instances:
                if instance.env is not None:
                    self._idle.append(instance.env)


#: The name OpenRLHF looks up in ``--train.agent_func_path`` (configured through ``GYM_NEMO_ENV``).
AgentExecutor = NemoAgentExecutor
