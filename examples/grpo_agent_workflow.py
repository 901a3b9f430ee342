"""GRPO through an agent framework: the tiny model trained on the calls a LangGraph agent makes.

    python examples/grpo_agent_workflow.py            # reward rises on CPU (~40 iterations)
    python examples/grpo_agent_workflow.py --smoke    # a few seconds: checks that it runs

The pattern NeMo Gym's docs call "agent workflow as the rollout source": the agent is ordinary LangGraph code
that talks to an OpenAI-compatible URL and scores its own answer. Each iteration (read top to bottom):

1. Rollouts. ``collect_agent_rollouts`` runs the LangGraph agent ``group_size`` times per task row, each run
   pointed at its own URL on a capturing gateway (``gym_nemo.agents.Gateway``) whose backend is the model
   being trained (``HFPolicy``). The gateway records every call's prompt ids, sampled ids and logprobs; the
   trajectory builder joins a run's calls into one token-exact ``EpisodeRecord`` (policy tokens mask 1), with
   the agent's score as its reward. The agent never sees token ids; nothing is re-tokenized.
2. Update. The group-normalized advantages and clipped surrogate of ``grpo_custom_loop.py`` (imported), on the
   records exactly as the GRPO loop on envs uses them.

The task is the toy one that shows learning quickly: the agent asks the model to reply with a letter repeated
and scores the share of that letter in the reply (as ``nemo/TargetChar-v0`` does).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from typing import Any

import torch
from grpo_custom_loop import grpo_update, prepare_run, save_curve

from gym_nemo.agents import Gateway, PolicyBackend
from gym_nemo.agents.rollout import collect_agent_rollouts
from gym_nemo.policies import HFPolicy


def letter_agent(row: Mapping[str, Any], base_url: str) -> float:
    """A one-node LangGraph agent: ask for the letter, score the share of it in the reply."""
    from langchain_openai import ChatOpenAI
    from langgraph.graph import START, MessagesState, StateGraph

    llm = ChatOpenAI(model="policy", base_url=base_url, api_key="none", max_retries=0, temperature=1.0)

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [llm.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_edge(START, "agent")
    prompt = f"Reply with the letter {row['letter']} repeated, nothing else."
    reply = str(graph.compile().invoke({"messages": [("user", prompt)]})["messages"][-1].content)
    chars = [c for c in reply if not c.isspace()]
    return sum(c == row["letter"] for c in chars) / len(chars) if chars else 0.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="a causal LM directory; default: build the tiny test model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--groups", type=int, default=8, help="task rows per iteration")
    p.add_argument("--group-size", type=int, default=16, help="agent runs per row (G)")
    p.add_argument("--max-tokens", type=int, default=4, help="tokens per LLM call")
    p.add_argument("--concurrency", type=int, default=32, help="agent runs at once")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--clip", type=float, default=0.2)
    p.add_argument("--update-epochs", type=int, default=2)
    p.add_argument("--minibatches", type=int, default=2)
    p.add_argument("--out", default="runs/grpo_agent_workflow")
    p.add_argument("--smoke", action="store_true", help="2 tiny iterations, to check that it runs")
    args = p.parse_args()
    if args.smoke:
        args.iterations, args.groups, args.group_size, args.max_tokens = 2, 2, 2, 8
    return args


def main() -> None:
    args = parse_args()
    out, model_dir, tokenizer = prepare_run(args)
    policy = HFPolicy(model_dir, tokenizer)  # answers the agent's calls with the weights being trained
    model = policy.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    rows = [{"task_id": "letter-a", "letter": "a"}] * args.groups  # one letter: learnable by the tiny model

    curve: list[float] = []
    start = time.monotonic()
    with Gateway(PolicyBackend(policy, max_tokens=args.max_tokens)) as gateway:
        for iteration in range(args.iterations):
            # ------------------------------------------------------------ 1. agent runs -> token-exact records
            model.eval()
            records, metrics = collect_agent_rollouts(
                gateway,
                letter_agent,
                rows,
                group_size=args.group_size,
                concurrency=args.concurrency,
                timeout_s=300,
                tokenizer=tokenizer,
                policy=policy.name,
            )
            curve.append(metrics.mean_reward)
            breaks = sum(len(r.breaks or []) for r in records)

            # ------------------------------------------------------------ 2. the GRPO update
            summary = grpo_update(model, optimizer, records, args, policy.pad_token_id)
            print(
                f"iter {iteration:3d}  reward {metrics.mean_reward:.3f}  mixed groups {metrics.mixed_group_rate:.2f}  "
                f"infra {metrics.infra_error_rate:.2f}  breaks {breaks}  loss {summary['loss']:+.4f}  "
                f"kl {summary['approx_kl']:.4f}  {time.monotonic() - start:.0f}s",
                flush=True,
            )

    start_reward, end_reward, window = save_curve(
        curve, out / "reward_curve.png", f"GRPO through a LangGraph agent (seed {args.seed})"
    )
    print(
        f"seed {args.seed}: mean reward {start_reward:.3f} (first {window} iterations) -> {end_reward:.3f} "
        f"(last {window}) over {args.iterations} iterations of {args.groups * args.group_size} agent runs in "
        f"{time.monotonic() - start:.0f} s; curve: {out / 'reward_curve.png'}"
    )


if __name__ == "__main__":
    main()
