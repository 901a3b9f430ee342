"""Evaluate two models against an OpenAI-compatible server and merge the runs into a leaderboard.

    python examples/leaderboard.py --base-url http://127.0.0.1:8000/v1 --models Qwen/Qwen3-0.6B Qwen/Qwen3-1.7B

runs ``gym-nemo eval --policy openai`` once per model (suite ``quick`` unless ``--suite`` says otherwise),
then ``gym-nemo reverify`` on each run and ``gym-nemo leaderboard`` over both: ``OUT/leaderboard.html``
(open it in a browser), ``.md`` and ``.json``. Any OpenAI-compatible chat endpoint works (``vllm serve``,
``transformers serve``, a hosted API with ``OPENAI_API_KEY`` set).

Without ``--base-url`` it runs offline on this machine: it builds two tiny random-init models (ChatML and
Llama-3 chat templates, ~5 s each, no download), starts ``transformers serve`` on 127.0.0.1 and evaluates
both. Their text is random, so they score 0; the reference policy (the embedded default, replaying reference
solutions with 30% of them corrupted) is added as a third entry so the plots have something to show.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from gym_nemo.cli import main as gym_nemo


@contextmanager
def local_server(workdir: Path):
    """``transformers serve`` on a free loopback port; yields its base URL and stops it (by PID) afterwards."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli = Path(sys.executable).parent / "transformers"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(workdir / "hf"))
    with open(workdir / "serve.log", "wb") as log:
        proc = subprocess.Popen(
            [str(cli), "serve", "--device", "cpu", "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"transformers serve did not start; see {workdir / 'serve.log'}") from None
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def evaluate(base_url: str, models: list[str], labels: list[str], suite: str, out: Path, max_tokens: int) -> list[Path]:
    """One ``gym-nemo eval`` run per model, each re-verified; returns the run directories."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY", "EMPTY"))
    runs = []
    for model, label in zip(models, labels, strict=True):
        # One request first: servers that load models on demand would otherwise bill the load to the run's time.
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=1)
        run = out / label.replace("/", "_")
        argv = ["eval", "--suite", suite, "--policy", "openai", "--model", model, "--label", label]
        argv += ["--base-url", base_url, "--max-tokens", str(max_tokens), "--out", str(run), "--overwrite"]
        if gym_nemo(argv) != 0 or gym_nemo(["reverify", str(run), "--quiet"]) != 0:
            raise SystemExit(f"evaluating {model} failed")
        runs.append(run)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default=None, help="an OpenAI-compatible endpoint; default: start one here")
    parser.add_argument("--models", nargs=2, default=None, help="two served model names (with --base-url)")
    parser.add_argument("--suite", default="quick", help="a shipped suite name or a suite YAML file")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--out", default="runs/leaderboard")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.base_url:
        if not args.models:
            parser.error("--base-url needs --models A B")
        runs = evaluate(args.base_url, args.models, args.models, args.suite, out, args.max_tokens)
    else:
        from gym_nemo.testing.tiny_model import build_tiny_model

        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            models = [str(build_tiny_model(workdir / name, name)) for name in ("chatml", "llama3")]
            with local_server(workdir) as url:
                runs = evaluate(url, models, ["tiny-chatml", "tiny-llama3"], args.suite, out, args.max_tokens)
        reference = out / "reference"
        if gym_nemo(["eval", "--suite", args.suite, "--out", str(reference), "--overwrite", "--quiet"]) != 0:
            raise SystemExit("the reference run failed")
        runs.append(reference)
    return gym_nemo(["leaderboard", *map(str, runs), "--out", str(out)])


if __name__ == "__main__":
    raise SystemExit(main())
