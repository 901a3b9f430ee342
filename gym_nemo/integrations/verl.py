"""verl agent loop: any ``nemo/*`` env as a registered ``AgentLoopBase`` (``agent_name: gym_nemo``).

Tested against verl 0.9.1 in its own venv (it pins ``transformers<5.11``; this project pins >=5.16.1):
``bash scripts/setup_verl.sh`` makes ``.venv-verl`` and ``tests/test_integrations_verl.py`` runs this class through
verl's own ``AgentLoopWorker.generate_sequences`` (Hydra config, agent-loop registry, ``LLMServerClient`` and load
balancer on Ray, padding and masks, ``rm_scores``) and its GRPO advantages, with a CPU server of the tiny model in
place of verl's vLLM/SGLang servers, which need CUDA (``gym_nemo/testing/verl_harness.py``). The class follows verl's
``AgentLoopBase.__init__(trainer_config, server_manager, tokenizer, processor, ...)``, ``async run(sampling_params,
**row) -> AgentLoopOutput``, ``@register(name)``; ``server_manager.generate(request_id, prompt_ids=,
sampling_params=) -> TokenOutput(token_ids, log_probs)``. The episode logic is
:func:`gym_nemo.rollout.engine.aplay`, the episode engine's asyncio driver.

Each sample's ``extra_info`` names the env and task: ``{"env_id": "nemo/CodeExec-v0", "task_id": "...",
"env_kwargs": {...}}`` (``task_rows`` builds such rows). Set the dataset's ``agent_name`` column (or
``actor_rollout_ref.rollout.agent.default_agent_loop``) to ``gym_nemo`` and import this module in the workers
(``actor_rollout_ref.rollout.agent.agent_loop_config_path`` pointing at a YAML with ``- name: gym_nemo``,
``_target_: gym_nemo.integrations.verl.NemoAgentLoop``). The end-of-turn token is added to
``sampling_params["stop_token_ids"]``; ``reward_score`` is the episode return (verl's reward manager is then not
needed); ``extra_fields`` carry ``turn_scores`` (per-step rewards) and ``infra_error``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar
from uuid import uuid4

import gymnasium as gym
from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput, register

import gym_nemo  # noqa: F401  (registers the nemo/* envs)
from gym_nemo.policies.token import Generation
from gym_nemo.rollout.engine import EpisodeTrace, aplay, policy_tokens
from gym_nemo.wrappers.token_env import TokenEnv

#: The agent-loop config verl reads from ``actor_rollout_ref.rollout.agent.agent_loop_config_path``.
AGENT_LOOP_YAML = "- name: gym_nemo\n  _target_: gym_nemo.integrations.verl.NemoAgentLoop\n"


def task_rows(env_id: str, *, env_kwargs: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """verl dataset rows for every task of ``env_id``: ``prompt`` (messages), ``agent_name``, ``extra_info``."""
    env = gym.make(env_id, **dict(env_kwargs or {}))
    try:
        rows = []
        for i in range(len(env.unwrapped.tasks)):
            _, info = env.reset(options={"task_index": i})
            extra = {"env_id": env_id, "task_id": str(info["task_id"]), "env_kwargs": dict(env_kwargs or {})}
            rows.append({"prompt": info["messages"], "agent_name": "gym_nemo", "extra_info": extra})
        return rows
    finally:
        env.close()


@register("gym_nemo")
class NemoAgentLoop(AgentLoopBase):
    """Plays the sample's gym_nemo task token-exactly through verl's inference server (see the module docstring)."""

    _idle: ClassVar[dict[tuple[str, str], list[TokenEnv]]] = {}  # envs reused across episodes, per env config

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.response_length = int(self.rollout_config.response_length)

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        extra = dict(kwargs.get("extra_info") or {})
        if "env_id" not in extra or "task_id" not in extra:
            raise ValueError("gym_nemo agent loop rows need extra_info with env_id and task_id (see task_rows)")
        key = (str(extra["env_id"]), repr(sorted((extra.get("env_kwargs") or {}).items())))
        pool = self._idle.setdefault(key, [])
        env = pool.pop() if pool else TokenEnv(gym.make(key[0], **dict(extra.get("env_kwargs") or {})), self.tokenizer)
        params = dict(sampling_params)
        params["stop_token_ids"] = sorted(set(params.get("stop_token_ids") or []) | set(env.end_of_turn_ids))

        async def generate(trace: EpisodeTrace) -> Generation:
            out = await self.server_manager.generate(uuid4().hex, prompt_ids=trace.context, sampling_params=params)
            return Generation.from_server(out.token_ids, out.log_probs, params["stop_token_ids"])

        trace = EpisodeTrace(key[0], "verl", task_id=str(extra["task_id"]))
        try:
            record = await aplay(
                env,
                generate,
                trace,
                options={"task_id": str(extra["task_id"])},
                max_response_tokens=self.response_length,
            )
        finally:
            pool.append(env)
        n = self.response_length
        stream = policy_tokens(record)
        return AgentLoopOutput(
            prompt_ids=record.prompt_ids,
            response_ids=stream.ids[:n],
            response_mask=stream.mask[:n],
            response_logprobs=stream.logprobs[:n],
            reward_score=None if record.infra_error else record.reward,
            num_turns=2 * record.num_turns + 1,
            metrics=AgentLoopMetrics(),
            extra_fields={"turn_scores": record.step_rewards, "tool_rewards": [], "infra_error": record.infra_error},
        )
