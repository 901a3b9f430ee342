"""Wall time per GRPO update: training while collecting (examples/grpo_async.py, with ``max_staleness`` 0 and 1)
against the synchronous loop (examples/grpo_custom_loop.py), same model, env, batch and seed, run one after the
other, alternating for ``--rounds`` rounds (the median of each is reported), with each run's reward start -> end.

    python bench/bench_grpo_async.py                     # 12 iterations of 8 groups x 8 episodes each loop
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
    times: dict[str, list[float]] = {"sync": [], "stream, max_staleness=0": [], "stream, max_staleness=1": []}
    for r in range(args.rounds):
        line = []
        for name in times:
            if name == "sync":
                seconds, reward = run("grpo_custom_loop.py", common)
            else:
                seconds, reward = run("grpo_async.py", [*common, "--max-staleness", name[-1]])
            times[name].append(seconds)
            line.append(f"{name} {seconds:.2f} s/update (reward {reward})")
        print(f"round {r}: " + "; ".join(line))
    sync = statistics.median(times["sync"])
    print(
        "median s/update: "
        + ", ".join(
            f"{name} {statistics.median(t):.2f} (sync/this x{sync / statistics.median(t):.2f})"
            for name, t in times.items()
        )
    )


if __name__ == "__main__":
    main()
