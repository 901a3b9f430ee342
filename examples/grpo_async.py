"""GRPO while collecting: the custom GRPO loop on a stream of rollouts with bounded staleness.

    python examples/grpo_async.py            # learns nemo/TargetChar-v0 on CPU
    python examples/grpo_async.py --smoke    # a few seconds: checks that it runs

The shape of PipelineRL / AReaL / NeMo RL's async GRPO, on gym_nemo. There are two copies of the model: the
trainer's, which the optimizer updates, and the policy's (``HFPolicy``), which generates in the stream's
background threads. Each iteration (read top to bottom):

1. Rollouts. Take ``--groups`` finished groups from ``stream_token_rollouts`` (``group_size`` episodes of one task
   each). With ``--max-staleness 1`` the stream keeps generating the next batch while this one trains; a group
   starts only if it will be at most one version behind when its batch trains, and finished groups are never
   dropped. Every turn's record says which weights version sampled it.
2. Update. The group-normalized advantages and the clipped surrogate of ``grpo_custom_loop.py`` (imported from
   it). The old logprobs are the sampler's, so the ratio corrects for the lag of up to one version.
3. Weight sync. ``stream.update_weights(trainer.state_dict(), version)``: the policy takes the new weights between
   two ``generate`` calls; episodes in flight go on with them.

It prints the reward per iteration, the staleness of the batch and the wall time per update, and saves the curve.
``bench/bench_grpo_async.py`` times this loop against the synchronous one side by side.
"""

from __future__ import annotations

import argparse
import copy
import time

import gymnasium as gym
import torch
from grpo_custom_loop import grpo_update, prepare_run, save_curve
from transformers import AutoModelForCausalLM

import gym_nemo  # noqa: F401  (registers the envs)
from gym_nemo.policies import HFPolicy, SamplingParams
from gym_nemo.rollout import rollout_metrics
from gym_nemo.rollout.stream import staleness, stream_token_rollouts
from gym_nemo.wrappers import TokenEnv


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default="nemo/TargetChar-v0", help="any nemo/* env id")
    p.add_argument("--model", default=None, help="a causal LM directory; default: build the tiny test model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--groups", type=int, default=8, help="tasks per iteration")
    p.add_argument("--group-size", type=int, default=16, help="episodes per task (G)")
    p.add_argument("--max-staleness", type=int, default=1, help="versions a batch may lag behind the trainer")
    p.add_argument("--max-in-flight", type=int, default=16, help="episodes generated at once")
    p.add_argument("--max-tokens", type=int, default=4, help="tokens per generation (per turn)")
    p.add_argument("--task-ids", nargs="*", default=None, help="restrict the task pool (toy env: target-char/a)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--clip", type=float, default=0.2, help="epsilon of the clipped ratio")
    p.add_argument("--update-epochs", type=int, default=2)
    p.add_argument("--minibatches", type=int, default=2)
    p.add_argument("--out", default="runs/grpo_async", help="where the curve PNG, records and tiny model go")
    p.add_argument("--smoke", action="store_true", help="3 tiny iterations, to check that it runs")
    args = p.parse_args()
    if args.task_ids is None and args.env == "nemo/TargetChar-v0":
        args.task_ids = ["target-char/a"]  # as in grpo_custom_loop.py: one letter the tiny model can learn
    if args.smoke:
        args.iterations, args.groups, args.group_size, args.max_tokens, args.max_in_flight = 3, 2, 2, 8, 4
    return args


def main() -> None:
    args = parse_args()
    # ---------------------------------------------------------------- the trainer's model, the policy's copy
    out, model_dir, tokenizer = prepare_run(args)
    trainer = AutoModelForCausalLM.from_pretrained(model_dir)
    optimizer = torch.optim.AdamW(trainer.parameters(), lr=args.lr, weight_decay=0.0)
    policy = HFPolicy(model_dir, tokenizer)  # generates in the stream's threads; weights synced each iteration
    env_kwargs: dict = {"task_ids": args.task_ids} if args.task_ids else {}

    def env_fn() -> gym.Env:
        return TokenEnv(gym.make(args.env, **env_kwargs), copy.deepcopy(tokenizer))

    (out / "rollouts.jsonl").unlink(missing_ok=True)  # a fresh run: the stream appends
    stream = stream_token_rollouts(
        env_fn,
        policy,
        env_id=args.env,
        group_size=args.group_size,
        batch_groups=args.groups,
        max_staleness=args.max_staleness,
        num_groups=args.iterations * args.groups,
        sampling=SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed),
        seed=args.seed * 100_003,
        out=out / "rollouts.jsonl",
        max_in_flight=args.max_in_flight,
    )

    curve: list[float] = []
    start = time.monotonic()
    with stream:
        for iteration in range(args.iterations):
            # ------------------------------------------------------------ 1. a batch of finished groups
            tick = time.monotonic()
            groups = [next(stream) for _ in range(args.groups)]
            records = [r for g in groups for r in g]
            waited = time.monotonic() - tick
            metrics = rollout_metrics(records)
            lag = max(staleness(g, stream.version) for g in groups)
            curve.append(metrics.mean_reward)

            # ------------------------------------------------------------ 2. the GRPO update (generation goes on)
            summary = grpo_update(trainer, optimizer, records, args, policy.pad_token_id)

            # ------------------------------------------------------------ 3. weight sync
            stream.update_weights(trainer.state_dict(), stream.version + 1)
            print(
                f"iter {iteration:3d}  reward {metrics.mean_reward:.3f}  mixed groups {metrics.mixed_group_rate:.2f}  "
                f"staleness {lag}  loss {summary['loss']:+.4f}  kl {summary['approx_kl']:.4f}  "
                f"waited {waited:.1f}s  {time.monotonic() - start:.0f}s",
                flush=True,
            )

    # ---------------------------------------------------------------- result
    elapsed = time.monotonic() - start
    start_reward, end_reward, window = save_curve(
        curve, out / "reward_curve.png", f"async GRPO on {args.env} (seed {args.seed})"
    )
    print(
        f"seed {args.seed}: mean reward {start_reward:.3f} (first {window} iterations) -> {end_reward:.3f} "
        f"(last {window}) over {args.iterations} iterations of {args.groups * args.group_size} episodes in "
        f"{elapsed:.0f} s ({elapsed / args.iterations:.2f} s per update); curve: {out / 'reward_curve.png'}"
    )


if __name__ == "__main__":
    main()
