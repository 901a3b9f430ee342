"""Wall time per GRPO update: training while collecting (examples/grpo_async.py) against the synchronous loop
(examples/grpo_custom_loop.py), same model, env, batch and seed, run one after the other in this process's
machine state, alternating for ``--rounds`` rounds (the median of each side is reported).

    python bench/bench_grpo_async.py                     # 12 iterations of 8 groups x 8 episodes each side
    python bench/bench_grpo_async.py --iterations 20 --rounds 3

Both loops build the tiny test model; the figure compared is each loop's own training-loop time divided by its
iterations (model building and imports excluded). On a machine with few cores generation and training compete
for the same cores, which bounds what overlap can win: the ratio printed is what this machine gives.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FINAL = re.compile(r"over (\d+) iterations of \d+ episodes in (\d+) s")
PER_UPDATE = re.compile(r"\(([\d.]+) s per update\)")
REWARDS = re.compile(r"mean reward ([\d.]+) \(first \d+ iterations\) -> ([\d.]+)")


def run(script: str, args: list[str]) -> tuple[float, str]:
    """Seconds per update of one run of ``script`` and its reward line."""
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.run(
            [sys.executable, str(EXAMPLES / script), *args, "--out", out],
            capture_output=True,
            text=True,
            check=True,
            cwd=EXAMPLES,
        )
    last = proc.stdout.strip().splitlines()[-1]
    rewards = REWARDS.search(last)
    reward = f"{rewards.group(1)} -> {rewards.group(2)}" if rewards else "?"
    if (m := PER_UPDATE.search(last)) is not None:
        return float(m.group(1)), reward
    m = FINAL.search(last)
    if m is None:
        raise RuntimeError(f"{script}: no timing in its last line: {last!r}")
    return int(m.group(2)) / int(m.group(1)), reward


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iterations", type=int, default=12)
    p.add_argument("--groups", type=int, default=8)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    common = ["--iterations", str(args.iterations), "--groups", str(args.groups), "--group-size", str(args.group_size)]
    sync_s, async_s = [], []
    for r in range(args.rounds):
        s, s_reward = run("grpo_custom_loop.py", common)
        a, a_reward = run("grpo_async.py", [*common, "--max-staleness", "1"])
        sync_s.append(s)
        async_s.append(a)
        print(f"round {r}: sync {s:.2f} s/update (reward {s_reward}), async {a:.2f} s/update (reward {a_reward})")
    s, a = statistics.median(sync_s), statistics.median(async_s)
    print(f"median s/update: sync {s:.2f}, async (max_staleness=1) {a:.2f}; sync/async = x{s / a:.2f}")


if __name__ == "__main__":
    main()
