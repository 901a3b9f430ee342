"""A gym_nemo env as a verl agent loop (``agent_name: gym_nemo``), and its episode core run on CPU.

On a GPU machine with verl (0.9.x; it pins transformers<5.11, so use its own environment), write the dataset
and an agent-loop config, then train with verl's PPO/GRPO entry point:

    python examples/verl_agent_loop.py --write-data data/codeexec.parquet --env nemo/CodeExec-v0
    python -m verl.trainer.main_ppo algorithm.adv_estimator=grpo \\
        data.train_files=data/codeexec.parquet data.return_raw_chat=True \\
        actor_rollout_ref.model.path=Qwen/Qwen3-0.6B actor_rollout_ref.rollout.name=vllm \\
        actor_rollout_ref.rollout.mode=async actor_rollout_ref.rollout.n=8 \\
        actor_rollout_ref.rollout.agent.agent_loop_config_path=data/gym_nemo_agent_loop.yaml ...

The adapter (``gym_nemo/integrations/verl.py``) runs through verl 0.9.1's own agent-loop worker in verl's own venv
(``bash scripts/setup_verl.sh``; ``gym_nemo/testing/verl_harness.py``; docs/training_extras.md). ``--smoke`` runs
what it delegates to, the episode engine's ``aplay``, in this venv, with the tiny model generating through
transformers in place of verl's server manager.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import gymnasium as gym

from gym_nemo.policies import HFPolicy, SamplingParams
from gym_nemo.policies.token import Generation
from gym_nemo.rollout.engine import EpisodeTrace, aplay, policy_tokens
from gym_nemo.wrappers import TokenEnv


def write_data(path: Path, env_id: str) -> None:
    """The verl dataset (parquet: prompt, agent_name, extra_info) and the agent-loop YAML next to it."""
    import pandas as pd

    from gym_nemo.integrations.verl import AGENT_LOOP_YAML, task_rows  # needs verl

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(task_rows(env_id)).to_parquet(path)
    (path.parent / "gym_nemo_agent_loop.yaml").write_text(AGENT_LOOP_YAML)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default="nemo/CodeExec-v0")
    p.add_argument("--episodes", type=int, default=4)
    p.add_argument("--response-length", type=int, default=512, help="verl's rollout.response_length")
    p.add_argument("--write-data", type=Path, default=None, help="write the verl dataset here (needs verl)")
    p.add_argument("--smoke", action="store_true", help="2 short episodes of the episode core")
    args = p.parse_args()
    if args.write_data is not None:
        write_data(args.write_data, args.env)
        return
    if args.smoke:
        args.episodes, args.response_length = 2, 200

    from gym_nemo.testing.tiny_model import build_tiny_model

    policy = HFPolicy(build_tiny_model(Path(tempfile.mkdtemp()) / "tiny", "chatml"))
    stops = (policy.tokenizer.convert_tokens_to_ids("<|im_end|>"),)  # what the adapter adds to verl's params

    async def generate(trace: EpisodeTrace) -> Generation:
        sampling = SamplingParams(max_tokens=32, temperature=1.0, stop_token_ids=stops)
        [gen] = await asyncio.to_thread(policy.generate, [trace.context], sampling)
        return gen

    async def run_all() -> list:
        envs = [TokenEnv(gym.make(args.env, max_attempts=2), policy.tokenizer) for _ in range(args.episodes)]
        tasks = [t.task_id for t in envs[0].unwrapped.tasks][: args.episodes]
        try:
            return await asyncio.gather(
                *(
                    aplay(
                        env,
                        generate,
                        EpisodeTrace(args.env, policy.name, task_id=task),
                        options={"task_id": task},
                        max_response_tokens=args.response_length,
                    )
                    for env, task in zip(envs, tasks, strict=False)
                )
            )
        finally:
            for env in envs:
                env.close()

    for record in asyncio.run(run_all()):
        stream = policy_tokens(record)
        print(
            f"{record.task_id}: reward {record.reward:.2f}  turns {record.num_turns}  done {record.terminated}  "
            f"response {len(stream.ids)} tokens ({sum(stream.mask)} policy)"
        )


if __name__ == "__main__":
    main()
