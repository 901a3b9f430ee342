"""CompCoding (``nemo/CompCoding-v0``) episodes/s against GEM's ``CodeEnv`` on the same task, in one run.

    python bench/bench_comp_coding.py --gem-python /tmp/gem/bin/python [--tests 1 8] [--episodes 60] [--rounds 3]

The task: read two integers from stdin, print their sum, with N hidden tests (stdin/stdout). Each episode is a
reset and one final answer holding the correct program, so every episode runs all N tests. GEM (``gem-llm``
0.1.0, with ``datasets``) must not be installed into gym_nemo's venv: make a scratch venv
(``python -m venv /tmp/gem && /tmp/gem/bin/pip install gem-llm==0.1.0 datasets pylatexenc``); its ``CodeEnv``
runs in a subprocess of that interpreter, with that venv's ``bin`` first on ``PATH`` (GEM launches each test as
``python -c``, so it gets a real interpreter, not a slow shim). Rounds alternate ours and GEM's, and each
round's ratio compares neighbours, so that other load on the machine hits both alike. "ours sequential" is
``parallel_tests=1`` (one test after another), "ours parallel" the default ``parallel_tests=4``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gymnasium as gym

import gym_nemo  # noqa: F401  (registers the envs)

SOLUTION = "a, b = map(int, input().split())\nprint(a + b)\n"
PROBLEM = "Read two integers a and b from one line of stdin and print a + b."


def tests(n: int) -> dict[str, list[str]]:
    return {"inputs": [f"{i} {7 * i + 3}\n" for i in range(n)], "outputs": [f"{8 * i + 3}\n" for i in range(n)]}


def ours(n_tests: int, episodes: int, parallel: bool) -> float:
    row = {
        "responses_create_params": {"input": [{"role": "user", "content": PROBLEM}]},
        "verifier_metadata": {"unit_tests": tests(n_tests), "task_id": "a_plus_b"},
    }
    env = gym.make("nemo/CompCoding-v0", data=[row], parallel_tests=4 if parallel else 1)
    answer = f"```python\n{SOLUTION}```"
    try:
        env.reset(seed=0)
        env.step(answer)  # warm the sandbox daemon
        start = time.perf_counter()
        for _ in range(episodes):
            env.reset()
            _, reward, terminated, _, _ = env.step(answer)
            assert reward == 1.0 and terminated
        return episodes / (time.perf_counter() - start)
    finally:
        env.close()


GEM_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from datasets import Dataset
    from gem.envs.code_env import CodeEnv
    n_tests, episodes, solution, problem, tests = json.loads(sys.argv[1])
    data = Dataset.from_list([{"problem": problem, "tests": tests}])
    env = CodeEnv(dataset_name="taco-a-plus-b", dataset=data, max_tests=max(12, n_tests))
    answer = "```python\\n" + solution + "```"
    env.reset(); env.step(answer)
    start = time.perf_counter()
    for _ in range(episodes):
        env.reset()
        _, reward, *_ = env.step(answer)
        assert reward == 1.0, reward
    print(episodes / (time.perf_counter() - start))
    """
)


def gem(python: str, n_tests: int, episodes: int) -> float:
    env = {**os.environ, "PATH": f"{Path(python).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    arg = json.dumps([n_tests, episodes, SOLUTION, PROBLEM, tests(n_tests)])
    with __import__("tempfile").TemporaryDirectory() as scratch:  # GEM makes its temp dirs in the cwd
        out = subprocess.run(
            [python, "-c", GEM_SCRIPT, arg], capture_output=True, text=True, env=env, cwd=scratch, check=True
        )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gem-python", required=True, help="python of a venv with gem-llm==0.1.0 and datasets")
    parser.add_argument("--tests", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--episodes", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"# {platform.node()} {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; episodes/s, higher is better")
    for n in args.tests:
        rows = []
        for r in range(args.rounds):
            if r % 2:  # every other round GEM goes first, so a drift in the machine's load favours neither
                base = gem(args.gem_python, n, args.episodes)
            seq = ours(n, args.episodes, parallel=False)
            par = ours(n, args.episodes, parallel=True)
            if not r % 2:
                base = gem(args.gem_python, n, args.episodes)
            rows.append((seq, par, base))
            print(
                f"tests={n} round {r + 1}: ours sequential {seq:6.1f}  ours parallel {par:6.1f}  GEM {base:6.1f}  "
                f"ratio sequential x{seq / base:.2f}  parallel x{par / base:.2f}",
                flush=True,
            )
        ratios = [p / g for _, p, g in rows]
        print(
            f"tests={n}: parallel/GEM median x{statistics.median(ratios):.2f} (x{min(ratios):.2f}-{max(ratios):.2f}); "
            f"sequential/GEM median x{statistics.median(s / g for s, _, g in rows):.2f}"
        )


if __name__ == "__main__":
    main()
