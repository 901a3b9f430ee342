"""PPO written out in full on gym_nemo: a value head, per-step rewards, token-level GAE, a clipped loss.

    python examples/ppo_custom_loop.py                         # nemo/TargetChar-v0, 2 attempts per episode
    python examples/ppo_custom_loop.py --smoke                 # a few seconds: checks that it runs
    python examples/ppo_custom_loop.py --env nemo/CodeExec-v0  # the same loop on HumanEval with a Python tool
    python examples/ppo_custom_loop.py --env nemo/FrozenLake-v0 --max-tokens 1 \
        --env-kwargs '{"is_slippery": false, "reward_mode": "dense", "max_turns": 8}'   # a world paying every step

The GRPO example's rollouts (``make_vec`` + ``TokenEnv`` + ``collect_token_rollouts`` + ``HFPolicy``), with what
PPO adds (read top to bottom):

1. Per-step rewards. A multi-turn episode pays a reward at every env step (here: each of two attempts at the
   toy task is scored; on CodeExec, tool calls pay 0 and the final answer its test score). Step k's reward is
   placed on the last token the policy generated in turn k; every other token gets 0.
2. A value head (one linear layer on the LM's last hidden state) estimates the return from each policy token.
3. GAE over the policy's tokens only, in order (the env's tokens between turns are part of the state, not
   actions): ``delta_t = r_t + gamma V_next - V_t``, ``A_t = delta_t + gamma lambda A_next``; returns ``A + V``.
4. Update: the clipped policy surrogate on normalized advantages plus ``vf_coef`` times the squared value
   error, both averaged over policy tokens, for ``update_epochs`` passes in ``minibatches``.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import matplotlib
import numpy as np
import torch
from transformers import AutoTokenizer

import gym_nemo
from gym_nemo.policies import HFPolicy, SamplingParams
from gym_nemo.rollout import collect_token_rollouts
from gym_nemo.wrappers import TokenEnv

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default="nemo/TargetChar-v0", help="any nemo/* env id")
    p.add_argument("--model", default=None, help="a causal LM directory; default: build the tiny test model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--num-envs", type=int, default=64, help="episodes per iteration")
    p.add_argument("--max-tokens", type=int, default=4, help="tokens per generation (per turn)")
    p.add_argument(
        "--max-attempts",
        type=int,
        default=None,
        help="the env's max_attempts (default: 2 on the toy env; worlds: none)",
    )
    p.add_argument("--env-kwargs", type=json.loads, default={}, help="more env kwargs, as a JSON object")
    p.add_argument("--task-ids", nargs="*", default=None, help="default for the toy env: target-char/a")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--gamma", type=float, default=1.0)
    p.add_argument("--gae-lambda", type=float, default=0.95)
    p.add_argument("--clip", type=float, default=0.2)
    p.add_argument("--vf-coef", type=float, default=0.5)
    p.add_argument("--update-epochs", type=int, default=2)
    p.add_argument("--minibatches", type=int, default=2)
    p.add_argument("--out", default="runs/ppo_custom_loop")
    p.add_argument("--smoke", action="store_true", help="2 tiny iterations, to check that it runs")
    args = p.parse_args()
    if args.env == "nemo/TargetChar-v0":
        args.task_ids = ["target-char/a"] if args.task_ids is None else args.task_ids
        args.max_attempts = 2 if args.max_attempts is None else args.max_attempts
    if args.smoke:
        args.iterations, args.num_envs, args.max_tokens = 2, 4, 8
    return args


def forward(
    model: torch.nn.Module, value_head: torch.nn.Module, ids: torch.Tensor, attention: torch.Tensor, start: int = 0
):
    """Logprobs of ids[:, 1:] and the value at each position that predicts them, both (batch, length - 1).

    Positions before ``start`` (prompt tokens of every row) are left 0: no loss ever reads them, and skipping
    their logits (``logits_to_keep``) is most of the cost when prompts are long, as a world's state is."""
    out = model(input_ids=ids, attention_mask=attention, output_hidden_states=True, logits_to_keep=ids.shape[1] - start)
    logits = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)
    logprobs = logits.gather(-1, ids[:, start + 1 :].unsqueeze(-1)).squeeze(-1)
    values = value_head(out.hidden_states[-1][:, start:-1].float()).squeeze(-1)
    skipped = torch.zeros((ids.shape[0], start))
    return torch.cat([skipped, logprobs], dim=1), torch.cat([skipped, values], dim=1)


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------- model, value head, envs
    model_dir = args.model
    if model_dir is None:
        from gym_nemo.testing.tiny_model import build_tiny_model

        model_dir = build_tiny_model(out / "tiny_model", "chatml", seed=args.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    policy = HFPolicy(model_dir, tokenizer)
    model = policy.model
    value_head = torch.nn.Linear(model.config.hidden_size, 1)
    torch.nn.init.zeros_(value_head.weight)
    torch.nn.init.zeros_(value_head.bias)
    optimizer = torch.optim.AdamW([*model.parameters(), *value_head.parameters()], lr=args.lr, weight_decay=0.0)

    env_kwargs: dict = dict(args.env_kwargs)
    if args.max_attempts is not None:
        env_kwargs["max_attempts"] = args.max_attempts
    if args.task_ids:
        env_kwargs["task_ids"] = args.task_ids
    envs = gym_nemo.make_vec(
        args.env, args.num_envs, "sync", wrappers=[partial(TokenEnv, tokenizer=tokenizer)], **env_kwargs
    )

    curve: list[float] = []
    start = time.monotonic()
    for iteration in range(args.iterations):
        # ------------------------------------------------------------ rollouts
        model.eval()
        records, metrics = collect_token_rollouts(
            envs,
            policy,
            args.num_envs,
            env_id=args.env,
            sampling=SamplingParams(max_tokens=args.max_tokens, temperature=1.0, seed=args.seed + iteration),
            seed=args.seed * 100_003 + iteration * args.num_envs,
            progress=False,
        )
        curve.append(metrics.mean_reward)

        # ------------------------------------------------------------ batch: ids, policy mask, per-token rewards
        sequences = [r.prompt_ids + r.completion_ids for r in records]
        n, width = len(records), max(len(s) for s in sequences)
        scored_from = min(len(r.prompt_ids) for r in records) - 1  # the first position whose prediction is scored
        ids = torch.full((n, width), policy.pad_token_id, dtype=torch.long)
        attention = torch.zeros_like(ids)
        policy_mask = torch.zeros((n, width - 1))
        old_logprobs = torch.zeros((n, width - 1))
        token_rewards = np.zeros((n, width - 1))
        for row, (record, seq) in enumerate(zip(records, sequences, strict=True)):
            ids[row, : len(seq)] = torch.tensor(seq)
            attention[row, : len(seq)] = 1
            first = len(record.prompt_ids) - 1  # target index of the first completion token
            mask = record.completion_mask
            scored = record.infra_error is None  # infra errors are not task failures: no loss on them
            policy_mask[row, first : first + len(mask)] = torch.tensor(mask, dtype=torch.float) * float(scored)
            old_logprobs[row, first : first + len(mask)] = torch.tensor(record.completion_logprobs)
            turn_ends = [j for j, m in enumerate(mask) if m and (j + 1 == len(mask) or not mask[j + 1])]
            for end, reward in zip(turn_ends, record.step_rewards, strict=False):  # step k pays on turn k's end
                token_rewards[row, first + end] = reward

        # ------------------------------------------------------------ values and GAE over policy tokens
        with torch.no_grad():
            _, old_values = forward(model, value_head, ids, attention, scored_from)
        advantages = np.zeros((n, width - 1))
        values_np = old_values.numpy()
        for row in range(n):
            positions = np.flatnonzero(policy_mask[row].numpy())
            next_value, next_advantage = 0.0, 0.0
            for t in positions[::-1]:
                delta = token_rewards[row, t] + args.gamma * next_value - values_np[row, t]
                next_advantage = delta + args.gamma * args.gae_lambda * next_advantage
                advantages[row, t] = next_advantage
                next_value = values_np[row, t]
        adv = torch.tensor(advantages, dtype=torch.float)
        returns = adv + old_values
        valid = policy_mask.bool()
        adv = torch.where(valid, (adv - adv[valid].mean()) / (adv[valid].std() + 1e-6), torch.zeros_like(adv))

        # ------------------------------------------------------------ clipped policy loss + value loss
        model.train()
        stats = {"policy_loss": [], "value_loss": [], "clipfrac": []}
        order = np.random.permutation(n)
        for _ in range(args.update_epochs):
            for batch in np.array_split(order, args.minibatches):
                mask = policy_mask[batch]
                if mask.sum() == 0:
                    continue
                new_logprobs, values = forward(model, value_head, ids[batch], attention[batch], scored_from)
                ratio = ((new_logprobs - old_logprobs[batch]) * mask).exp()
                surrogate = torch.minimum(ratio * adv[batch], ratio.clamp(1 - args.clip, 1 + args.clip) * adv[batch])
                policy_loss = -(surrogate * mask).sum() / mask.sum()
                value_loss = (((values - returns[batch]) ** 2) * mask).sum() / mask.sum()
                loss = policy_loss + args.vf_coef * value_loss
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_([*model.parameters(), *value_head.parameters()], 1.0)
                optimizer.step()
                stats["policy_loss"].append(policy_loss.item())
                stats["value_loss"].append(value_loss.item())
                stats["clipfrac"].append(((((ratio - 1).abs() > args.clip).float() * mask).sum() / mask.sum()).item())
        summary = {k: float(np.mean(v)) if v else 0.0 for k, v in stats.items()}
        print(
            f"iter {iteration:3d}  reward {metrics.mean_reward:.3f}  turns {metrics.mean_turns:.2f}  "
            f"policy loss {summary['policy_loss']:+.4f}  value loss {summary['value_loss']:.4f}  "
            f"clipfrac {summary['clipfrac']:.3f}  {time.monotonic() - start:.0f}s",
            flush=True,
        )
    envs.close()

    window = max(1, min(5, len(curve) // 4))
    start_reward, end_reward = float(np.mean(curve[:window])), float(np.mean(curve[-window:]))
    plt.figure(figsize=(6, 3.5))
    plt.plot(curve, marker=".")
    plt.xlabel("iteration")
    plt.ylabel("mean episode return")
    plt.title(f"PPO on {args.env} (seed {args.seed})")
    plt.grid(alpha=0.3)
    plt.tight_layout()
    plt.savefig(out / "reward_curve.png", dpi=120)
    print(
        f"seed {args.seed}: mean return {start_reward:.3f} (first {window} iterations) -> {end_reward:.3f} "
        f"(last {window}) over {args.iterations} iterations of {args.num_envs} episodes in "
        f"{time.monotonic() - start:.0f} s; curve: {out / 'reward_curve.png'}"
    )


if __name__ == "__main__":
    main()
