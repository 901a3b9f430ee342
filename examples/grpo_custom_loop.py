"""GRPO written out in full on gym_nemo: token-level rollouts, group-normalized advantages, a clipped loss.

    python examples/grpo_custom_loop.py                         # learns nemo/TargetChar-v0 on CPU (~1 min)
    python examples/grpo_custom_loop.py --smoke                 # a few seconds: checks that it runs
    python examples/grpo_custom_loop.py --env nemo/CodeExec-v0  # the same loop on HumanEval with a Python tool

What happens each iteration (read top to bottom, in the spirit of CleanRL):

1. Rollouts. ``gym_nemo.make_vec`` builds ``groups * group_size`` envs, each wrapped in ``TokenEnv`` (the chat
   template applied by the tokenizer; the policy's ids go in verbatim). ``collect_token_rollouts`` resets the
   ``group_size`` envs of a group on the same task, then generates with ``HFPolicy`` (the model being trained)
   and steps the envs until every episode ends (multi-turn: tool calls, feedback). Each record holds the
   episode's ``prompt_ids``, ``completion_ids`` (policy and env tokens), ``completion_mask`` (1 = a token the
   policy sampled) and the sampling logprobs.
2. Advantages. GRPO has no value function: an episode's advantage is its reward minus its group's mean,
   divided by the group's std (every token of the episode shares it). Groups whose rewards are all equal
   teach nothing.
3. Update. ``update_epochs`` passes over the batch in ``minibatches``: the new logprob of each sampled token,
   the ratio to the sampling logprob, the clipped surrogate ``min(r * A, clip(r, 1 - eps, 1 + eps) * A)``,
   averaged over the policy's tokens only (tool results, feedback and the template's tokens are masked out).
   No KL penalty (beta = 0, as in DAPO/Dr. GRPO); the approximate KL to the sampling policy is logged.

It ends by printing the start and end mean reward and the seed, and saving the reward curve as a PNG.
With no ``--model`` it builds the tiny random-init test model (``gym_nemo.testing.tiny_model``), offline.
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from transformers import AutoTokenizer

import gym_nemo
from gym_nemo.policies import HFPolicy, SamplingParams
from gym_nemo.rollout import collect_token_rollouts
from gym_nemo.tracking import batch_metrics, make_logger
from gym_nemo.wrappers import TokenEnv

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default="nemo/TargetChar-v0", help="any nemo/* env id")
    p.add_argument("--model", default=None, help="a causal LM directory; default: build the tiny test model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--groups", type=int, default=8, help="tasks per iteration")
    p.add_argument("--group-size", type=int, default=16, help="episodes per task (G)")
    p.add_argument("--max-tokens", type=int, default=4, help="tokens per generation (per turn)")
    p.add_argument("--max-turns", type=int, default=None, help="the env's max_turns (default: the env's own)")
    p.add_argument(
        "--task-ids",
        nargs="*",
        default=None,
        help="restrict the env's task pool to these ids (default for the toy env: target-char/a)",
    )
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--clip", type=float, default=0.2, help="epsilon of the clipped ratio")
    p.add_argument("--update-epochs", type=int, default=2)
    p.add_argument("--minibatches", type=int, default=2)
    p.add_argument("--out", default="runs/grpo_custom_loop", help="where the curve PNG (and tiny model) go")
    p.add_argument(
        "--log-to",
        default="",
        help="metric loggers, comma-separated: tensorboard, wandb (offline), trackio, jsonl; under OUT/logs",
    )
    p.add_argument("--smoke", action="store_true", help="2 tiny iterations, to check that it runs")
    args = p.parse_args()
    if args.task_ids is None and args.env == "nemo/TargetChar-v0":
        # One letter: the tiny random model learns it in ~40 iterations. With all five letters it first learns
        # one letter for every prompt and can collapse there (rewards equal within groups: no more signal).
        args.task_ids = ["target-char/a"]
    if args.smoke:
        args.iterations, args.groups, args.group_size, args.max_tokens = 2, 2, 2, 8
    return args


def sequence_logprobs(model: torch.nn.Module, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """log p(ids[:, t] | ids[:, :t]) for t >= 1, shape (batch, length - 1)."""
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
    return torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)


def group_advantages(records: list) -> tuple[np.ndarray, np.ndarray]:
    """GRPO's advantage per episode (reward minus its group's mean, over the group's std) and which episodes
    count: infra errors are not task failures, and groups whose rewards are all equal teach nothing."""
    rewards = np.array([r.reward for r in records])
    groups = np.array([r.group for r in records])
    scored = np.array([r.infra_error is None for r in records])
    advantages = np.zeros(len(records))
    for g in np.unique(groups):
        members = (groups == g) & scored
        if members.sum() > 1:
            group_rewards = rewards[members]
            advantages[members] = (group_rewards - group_rewards.mean()) / (group_rewards.std() + 1e-4)
    return advantages, scored


def batch_tensors(records: list, scored: np.ndarray, pad_token_id: int) -> tuple[torch.Tensor, ...]:
    """Right-padded ids and attention, and per target position the policy mask and the sampling logprobs."""
    sequences = [r.prompt_ids + r.completion_ids for r in records]
    width = max(len(s) for s in sequences)
    ids = torch.full((len(records), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    policy_mask = torch.zeros((len(records), width - 1))  # aligned with the targets ids[:, 1:]
    old_logprobs = torch.zeros((len(records), width - 1))
    for row, (record, seq) in enumerate(zip(records, sequences, strict=True)):
        ids[row, : len(seq)] = torch.tensor(seq)
        attention[row, : len(seq)] = 1
        first = len(record.prompt_ids) - 1  # the target index of the first completion token
        span = slice(first, first + len(record.completion_ids))
        policy_mask[row, span] = torch.tensor(record.completion_mask, dtype=torch.float) * float(scored[row])
        old_logprobs[row, span] = torch.tensor(record.completion_logprobs)
    return ids, attention, policy_mask, old_logprobs


def grpo_update(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, records: list, args: argparse.Namespace, pad_id: int
) -> dict[str, float]:
    """Advantages, then ``update_epochs`` passes of the clipped surrogate over ``minibatches``; the stats."""
    advantages, scored = group_advantages(records)
    ids, attention, policy_mask, old_logprobs = batch_tensors(records, scored, pad_id)
    adv = torch.tensor(advantages, dtype=torch.float).unsqueeze(1)
    model.train()
    stats: dict[str, list[float]] = {"loss": [], "clipfrac": [], "approx_kl": []}
    order = np.random.permutation(len(records))
    for _ in range(args.update_epochs):
        for batch in np.array_split(order, args.minibatches):
            mask = policy_mask[batch]
            if mask.sum() == 0:
                continue
            new_logprobs = sequence_logprobs(model, ids[batch], attention[batch])
            log_ratio = (new_logprobs - old_logprobs[batch]) * mask
            ratio = log_ratio.exp()
            unclipped = ratio * adv[batch]
            clipped = ratio.clamp(1 - args.clip, 1 + args.clip) * adv[batch]
            loss = -(torch.minimum(unclipped, clipped) * mask).sum() / mask.sum()  # policy tokens only
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            with torch.no_grad():
                stats["loss"].append(loss.item())
                stats["clipfrac"].append(
                    (((ratio - 1).abs() > args.clip).float() * mask).sum().item() / mask.sum().item()
                )
                stats["approx_kl"].append((((ratio - 1) - log_ratio) * mask).sum().item() / mask.sum().item())
    return {k: float(np.mean(v)) if v else 0.0 for k, v in stats.items()}


def save_curve(curve: list[float], path: Path, title: str) -> tuple[float, float, int]:
    """Plot the reward curve to ``path``; the mean reward of the first and last window and the window."""
    window = max(1, min(5, len(curve) // 4))
    plt.figure(figsize=(6, 3.5))
    plt.plot(curve, marker=".")
    plt.xlabel("iteration")
    plt.ylabel("mean episode reward")
    plt.title(title)
    plt.grid(alpha=0.3)
    plt.tight_layout()
    plt.savefig(path, dpi=120)
    return float(np.mean(curve[:window])), float(np.mean(curve[-window:])), window


def prepare_run(args: argparse.Namespace) -> tuple[Path, Path, Any]:
    """Seeds, the output folder, the model folder (``--model``, else the tiny test model built offline into the
    output folder) and its tokenizer: what every GRPO example starts with."""
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = args.model
    if model_dir is None:
        from gym_nemo.testing.tiny_model import build_tiny_model

        model_dir = build_tiny_model(out / "tiny_model", "chatml", seed=args.seed)
    return out, Path(model_dir), AutoTokenizer.from_pretrained(model_dir)


def main() -> None:
    args = parse_args()
    # ---------------------------------------------------------------- model, policy, envs
    out, model_dir, tokenizer = prepare_run(args)
    policy = HFPolicy(model_dir, tokenizer)  # generates with the same weights the optimizer updates
    model = policy.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)

    num_envs = args.groups * args.group_size
    env_kwargs: dict = {} if args.max_turns is None else {"max_turns": args.max_turns}
    if args.task_ids:
        env_kwargs["task_ids"] = args.task_ids
    envs = gym_nemo.make_vec(
        args.env, num_envs, "sync", wrappers=[partial(TokenEnv, tokenizer=tokenizer)], **env_kwargs
    )
    sampling = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed)

    logger = make_logger(args.log_to, log_dir=out / "logs", run_name=f"seed{args.seed}", config=vars(args))
    curve: list[float] = []
    start = time.monotonic()
    for iteration in range(args.iterations):
        # ------------------------------------------------------------ 1. rollouts (group sampling)
        model.eval()
        records, metrics = collect_token_rollouts(
            envs,
            policy,
            num_envs,
            env_id=args.env,
            group_size=args.group_size,
            sampling=SamplingParams(**{**sampling.__dict__, "seed": args.seed + iteration}),
            seed=args.seed * 100_003 + iteration * args.groups,  # new tasks every iteration
            progress=False,
        )
        curve.append(metrics.mean_reward)

        # ------------------------------------------------------------ 2-3. advantages and the clipped update
        summary = grpo_update(model, optimizer, records, args, policy.pad_token_id)
        timings = {"wall_s": metrics.duration_s, "env_s": metrics.env_s, "policy_s": metrics.policy_s}
        rollout = batch_metrics(records, **timings, prefix="rollout/")
        logger.log({**rollout, **{f"train/{k}": v for k, v in summary.items()}}, step=iteration)
        print(
            f"iter {iteration:3d}  reward {metrics.mean_reward:.3f}  mixed groups {metrics.mixed_group_rate:.2f}  "
            f"turns {metrics.mean_turns:.2f}  loss {summary['loss']:+.4f}  clipfrac {summary['clipfrac']:.3f}  "
            f"kl {summary['approx_kl']:.4f}  tokens {metrics.policy_tokens}  {time.monotonic() - start:.0f}s",
            flush=True,
        )
    envs.close()
    logger.close()

    # ---------------------------------------------------------------- result
    start_reward, end_reward, window = save_curve(
        curve, out / "reward_curve.png", f"GRPO on {args.env} (seed {args.seed})"
    )
    print(
        f"seed {args.seed}: mean reward {start_reward:.3f} (first {window} iterations) -> {end_reward:.3f} "
        f"(last {window}) over {args.iterations} iterations of {num_envs} episodes in "
        f"{time.monotonic() - start:.0f} s; curve: {out / 'reward_curve.png'}"
    )


if __name__ == "__main__":
    main()
