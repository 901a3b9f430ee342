"""`gym-nemo eval` with models: two tiny models behind a real OpenAI-compatible server (`transformers serve`
on 127.0.0.1), the tiny HF model through the async token collector, and the leaderboard page they make,
rendered by headless Chromium (screenshot + DOM checked)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("openai")

from gym_nemo.cli import main
from gym_nemo.policies.openai import OpenAIPolicy

SUITE = """
name: test-models
seed: 5
k: 2
tasks: 2
concurrency: 2
sampling: {max_tokens: 8, temperature: 0.0}
envs:
  - nemo/CodeExec-v0
  - nemo/MCQA-v0
"""
EPISODES = 8  # 2 envs x 2 tasks x k=2


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _rows(run: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (run / "rollouts" / f"{name}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def served(transformers_server: str, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Runs of one suite: a Llama-3-template tiny model twice, the ChatML one, and the reference policy.
    (``transformers serve`` answers the Llama-3 model ~30x faster, so it takes the repeated run.)"""
    from gym_nemo.testing.tiny_model import build_tiny_model

    root = tmp_path_factory.mktemp("served")
    llama = build_tiny_model(root / "llama3", "llama3")
    suite = root / "suite.yaml"
    suite.write_text(SUITE)
    runs = {}
    for name, model, label in (
        ("a", llama, "tiny-llama3"),
        ("a2", llama, "tiny-llama3"),
        ("b", tiny_model_dir, "tiny-chatml"),
    ):
        runs[name] = root / name
        argv = ["eval", "--suite", str(suite), "--policy", "openai", "--model", str(model), "--label", label]
        assert main([*argv, "--base-url", transformers_server, "--out", str(runs[name]), "--quiet"]) == 0
    runs["ref"] = root / "ref"
    assert main(["eval", "--suite", str(suite), "--corrupt-rate", "0", "--out", str(runs["ref"]), "--quiet"]) == 0
    return {"runs": runs, "url": transformers_server, "model": str(llama), "chatml": str(tiny_model_dir)}


def test_eval_against_a_served_model(served: dict) -> None:
    run = served["runs"]["a"]
    manifest, results = _json(run / "manifest.json"), _json(run / "results.json")
    policy = manifest["reproducible"]["policy"]
    assert policy == {"kind": "openai", "label": "tiny-llama3", "model": served["model"], "endpoint": served["url"]}
    assert manifest["reproducible"]["sampling"] == {"max_tokens": 8, "temperature": 0.0}
    rows = [r for name in ("CodeExec-v0", "MCQA-v0") for r in _rows(run, name)]
    assert len(rows) == EPISODES and all(r["infra_error"] is None for r in rows)
    assert all(r["policy"] == f"openai:{served['model']}" for r in rows)
    # Each assistant message is what the server answers for that chat (greedy, so a direct call must match).
    direct = OpenAIPolicy(served["model"], served["url"], max_tokens=8, temperature=0.0, logprobs=False)
    row = rows[0]
    first_reply = next(i for i, m in enumerate(row["messages"]) if m["role"] == "assistant")
    tools = json.loads(json.dumps(_tools(row["env_id"])))
    assert direct.complete(row["messages"][:first_reply], tools).text == row["messages"][first_reply]["content"]
    turns = sum(r["num_turns"] for r in rows)
    tokens = results["timing"]["overall"]["policy_tokens"]
    assert 0 < tokens <= 8 * turns  # the server's usage counts, at most max_tokens a turn
    assert results["scores"]["overall"]["infra_error_rate"] == 0.0
    assert main(["reverify", str(run), "--quiet"]) == 0


def _tools(env_id: str) -> list[dict]:
    import gymnasium as gym

    env = gym.make(env_id)
    try:
        return env.unwrapped.tools
    finally:
        env.close()


def test_two_runs_against_the_server_give_the_same_manifest_and_scores(served: dict) -> None:
    a, a2 = served["runs"]["a"], served["runs"]["a2"]
    assert _json(a / "manifest.json")["reproducible"] == _json(a2 / "manifest.json")["reproducible"]
    assert _json(a / "results.json")["scores"] == _json(a2 / "results.json")["scores"]
    b = _json(served["runs"]["b"] / "manifest.json")
    assert b["reproducible"]["envs"] == _json(a / "manifest.json")["reproducible"]["envs"]  # same tasks and data
    assert b["fingerprint"] != _json(a / "manifest.json")["fingerprint"]  # another model


@pytest.fixture(scope="module")
def leaderboard(served: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("leaderboard")
    runs = served["runs"]
    assert main(["leaderboard", str(runs["a"]), str(runs["b"]), str(runs["ref"]), "--out", str(out)]) == 0
    return out


def test_leaderboard_files(leaderboard: Path) -> None:
    board = _json(leaderboard / "leaderboard.json")
    assert board["comparable"] and board["envs"] == ["CodeExec-v0", "MCQA-v0"]
    labels = [r["label"] for r in board["runs"]]
    assert labels[0] == "reference" and sorted(labels[1:]) == ["tiny-chatml", "tiny-llama3"]  # ranked by pass@1
    assert "| 1 | reference | 1.000 [1.000, 1.000] |" in (leaderboard / "leaderboard.md").read_text()
    page = (leaderboard / "leaderboard.html").read_text()
    assert "<script src=" not in page and "http://" not in page.split("<script")[0]  # nothing fetched
    assert page.count("Plotly.newPlot") == 2 and len(page) > 1_000_000  # plotly.js is inlined


def _chromium() -> str:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip("chromium is not installed (scripts/install_chromium.sh installs it as root)")
    return binary


def _chromium_run(page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
    ]
    return subprocess.run(
        [_chromium(), *flags, *args, page.resolve().as_uri()], capture_output=True, text=True, timeout=120, check=False
    )


def test_leaderboard_page_renders_in_headless_chromium(leaderboard: Path, tmp_path: Path) -> None:
    from PIL import Image

    page = leaderboard / "leaderboard.html"
    dom = _chromium_run(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert html.count('class="main-svg"') >= 4  # plotly drew both figures (it adds its SVG layers when it runs)
    table = html[html.index('<table class="leaderboard">') : html.index("</table>")]
    assert table.count("<tr>") == 4 and all(label in table for label in ("reference", "tiny-chatml", "tiny-llama3"))

    shot = tmp_path / "leaderboard.png"
    result = _chromium_run(page, tmp_path, f"--screenshot={shot}", "--window-size=1280,1600")
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 1600)
    pixels = list(image.get_flattened_data()) if hasattr(image, "get_flattened_data") else list(image.getdata())
    non_white = sum(1 for p in pixels if sum(p) < 720) / len(pixels)
    assert non_white > 0.05  # not a blank page
    # The reference's bars (1.0 everywhere) in plotly's first trace colour #636efa: the bar chart was drawn.
    bar_blue = sum(1 for r, g, b in pixels if abs(r - 0x63) < 12 and abs(g - 0x6E) < 12 and abs(b - 0xFA) < 12)
    assert bar_blue > 5_000


def test_eval_with_the_hf_policy_runs_through_the_async_collector(tiny_model_dir: Path, tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.replace("concurrency: 2", "concurrency: 4"))
    run = tmp_path / "hf"
    argv = ["eval", "--suite", str(suite), "--policy", "hf", "--model", str(tiny_model_dir), "--out", str(run)]
    assert main([*argv, "--quiet"]) == 0
    manifest, results = _json(run / "manifest.json"), _json(run / "results.json")
    for name, info in manifest["reproducible"]["envs"].items():
        rows = _rows(run, name)
        assert len(rows) == 4 and all(r["infra_error"] is None for r in rows)
        for row in rows:  # group g played the suite's task g (PinnedTasks maps the collector's group seeds)
            assert row["task_id"] == info["task_ids"][row["group"]]
            assert row["completion_ids"] and len(row["completion_mask"]) == len(row["completion_ids"])
        assert sorted(r["group"] for r in rows) == [0, 0, 1, 1]
    masks = sum(sum(r["completion_mask"]) for name in manifest["reproducible"]["envs"] for r in _rows(run, name))
    assert results["timing"]["overall"]["policy_tokens"] == masks > 0
    assert main(["reverify", str(run), "--quiet"]) == 0


def test_leaderboard_example_against_the_server(served: dict, tmp_path: Path) -> None:
    """examples/leaderboard.py evaluates two served models, re-verifies both runs and writes the leaderboard."""
    import sys

    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    example = Path(__file__).resolve().parents[1] / "examples" / "leaderboard.py"
    models = [served["model"], served["chatml"]]
    argv = [sys.executable, str(example), "--base-url", served["url"], "--models", *models]
    argv += ["--suite", str(suite), "--max-tokens", "8", "--out", str(tmp_path / "out")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("every reward and score reproduced") == 2
    board = _json(tmp_path / "out" / "leaderboard.json")
    assert sorted(r["label"] for r in board["runs"]) == sorted(models)
    assert (tmp_path / "out" / "leaderboard.html").stat().st_size > 1_000_000
