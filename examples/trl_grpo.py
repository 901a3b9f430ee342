"""TRL's GRPOTrainer on a gym_nemo env through EnvRollout (token-exact, multi-turn rollouts as a rollout_func).

    python examples/trl_grpo.py --smoke                      # 2 steps on CPU with the tiny model (seconds)
    python examples/trl_grpo.py                              # nemo/TargetChar-v0, tiny model, CPU
    python examples/trl_grpo.py --model Qwen/Qwen3-0.6B --env nemo/CodeExec-v0 --use-vllm   # a GPU machine

Each training step TRL hands ``EnvRollout`` its batch of prompts (each repeated ``num_generations`` times);
every prompt becomes one env episode played with the trainer's own model (or TRL's vLLM engine with
``--use-vllm``), and TRL trains on the policy's tokens only (``env_mask``) with the env's reward (``env_reward``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from gym_nemo.integrations.trl import EnvRollout, env_reward


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default="nemo/TargetChar-v0")
    p.add_argument("--model", default=None, help="model path or hub id; default: build the tiny test model")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--prompts-per-step", type=int, default=4)
    p.add_argument("--num-generations", type=int, default=8)
    p.add_argument("--max-completion-length", type=int, default=4, help="tokens per turn")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--use-vllm", action="store_true", help="generate with TRL's vLLM engine (colocate mode)")
    p.add_argument("--out", default="runs/trl_grpo")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args()
    if args.smoke:
        args.steps, args.prompts_per_step, args.num_generations = 2, 2, 2

    model_path = args.model
    if model_path is None:
        from gym_nemo.testing.tiny_model import build_tiny_model

        model_path = str(build_tiny_model(Path(args.out) / "tiny_model", "chatml", seed=args.seed))
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)

    env_kwargs = {"task_ids": ["target-char/a"]} if args.env == "nemo/TargetChar-v0" else {}
    rollout = EnvRollout(args.env, env_kwargs=env_kwargs)
    config = GRPOConfig(
        output_dir=args.out,
        per_device_train_batch_size=args.prompts_per_step * args.num_generations,
        num_generations=args.num_generations,
        max_steps=args.steps,
        max_completion_length=args.max_completion_length,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        beta=0.0,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=args.seed,
        use_cpu=not torch.cuda.is_available(),
        use_vllm=args.use_vllm,
        vllm_mode="colocate",
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[env_reward],
        args=config,
        train_dataset=rollout.dataset(num_rows=args.steps * args.prompts_per_step),
        processing_class=tokenizer,
        rollout_func=rollout,
    )
    trainer.train()
    rollout.close()
    logs = [h for h in trainer.state.log_history if "rewards/env_reward/mean" in h]
    for h in logs:
        print(
            f"step {h['step']:3d}  env reward {h['rewards/env_reward/mean']:.3f}  turns {h['env/turns_mean']:.2f}  "
            f"policy tokens {h['completions/mean_length']:.1f}  loss {h['loss']:+.4f}  entropy {h['entropy']:.3f}"
        )
    window = max(1, min(5, len(logs) // 4))
    first = sum(h["rewards/env_reward/mean"] for h in logs[:window]) / window
    last = sum(h["rewards/env_reward/mean"] for h in logs[-window:]) / window
    runtime = next(h["train_runtime"] for h in trainer.state.log_history if "train_runtime" in h)
    print(f"seed {args.seed}: env reward {first:.3f} (first {window} steps) -> {last:.3f} (last {window})")
    print(f"train runtime {runtime:.0f} s")


if __name__ == "__main__":
    main()
