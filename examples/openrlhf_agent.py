"""The file to pass to OpenRLHF as ``--train.agent_func_path``: a gym_nemo env as OpenRLHF's AgentExecutor.

On a GPU machine with OpenRLHF (0.11.x) and vLLM, after writing the prompts (one row per task, the task id as the
label) with ``python -c "from gym_nemo.integrations.openrlhf import write_prompts;
write_prompts('nemo/CodeExec-v0', 'codeexec.jsonl')"``:

    python -m openrlhf.cli.train_ppo_ray --model.model_name_or_path Qwen/Qwen3-0.6B \\
        --data.prompt_data codeexec.jsonl --data.input_key prompt --data.label_key label \\
        --data.apply_chat_template --train.agent_func_path examples/openrlhf_agent.py \\
        --algo.advantage.estimator group_norm --rollout.n_samples_per_prompt 8 ...

Run directly, ``python examples/openrlhf_agent.py --smoke`` plays a few episodes through OpenRLHF's own
``MultiTurnAgentExecutor`` (loaded from the OpenRLHF wheel when OpenRLHF is not installed, see
``scripts/fetch_openrlhf.sh``) with the tiny model generating through transformers in place of vLLM.
"""

from __future__ import annotations

if __name__ == "__main__":  # run directly: OpenRLHF's agent.py from the wheel when OpenRLHF is not installed
    from gym_nemo.testing.openrlhf_harness import load_openrlhf_agent

    load_openrlhf_agent()

from gym_nemo.integrations.openrlhf import NemoAgentExecutor


class AgentExecutor(NemoAgentExecutor):
    """What OpenRLHF instantiates: CodeExec (HumanEval with a sandboxed Python tool), two answers per episode."""

    env_id = "nemo/CodeExec-v0"
    env_kwargs = {"max_attempts": 2, "max_turns": 6}  # noqa: RUF012  (read-only configuration)


def main() -> None:
    import argparse
    import asyncio
    import tempfile
    from pathlib import Path

    from gym_nemo.policies import HFPolicy
    from gym_nemo.testing.openrlhf_harness import HFEngine, VLLMSamplingParams
    from gym_nemo.testing.tiny_model import build_tiny_model

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--max-length", type=int, default=1400, help="OpenRLHF's prompt + response budget")
    p.add_argument("--smoke", action="store_true", help="2 short episodes")
    args = p.parse_args()
    if args.smoke:
        args.episodes, args.max_length = 2, 1000

    policy = HFPolicy(build_tiny_model(Path(tempfile.mkdtemp()) / "tiny", "chatml"))
    executor = AgentExecutor()
    tasks = [task.task_id for task in executor.acquire_env(policy.tokenizer).unwrapped.tasks][: args.episodes]

    async def run_all() -> list[dict]:
        params = VLLMSamplingParams(temperature=1.0, max_tokens=None, logprobs=1)
        engine = HFEngine(policy)
        return await asyncio.gather(
            *(executor.execute(None, task_id, params, args.max_length, policy.tokenizer, engine) for task_id in tasks)
        )

    for task_id, result in zip(tasks, asyncio.run(run_all()), strict=True):
        policy_tokens = sum(end - start for start, end in result["action_ranges"])
        print(
            f"{task_id}: reward {result['reward']:.2f}  turns {len(result['action_ranges'])}  "
            f"tokens {len(result['observation_tokens'])} ({policy_tokens} policy)  truncated {result['truncated']}"
        )


if __name__ == "__main__":
    main()
