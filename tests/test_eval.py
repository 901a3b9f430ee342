"""`gym-nemo eval` end to end with the embedded default (reference) policy: real envs, sandbox and verifiers.

Same seed -> same manifest and scores; reverify reproduces every reward and catches a tampered one; the
leaderboard ranks the runs; the reference policy without corruption passes everything (the pipeline
loses no reward on the way).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gym_nemo.cli import main
from gym_nemo.eval.report import build_leaderboard, to_markdown

SUITE = """
name: test-reference
seed: 11
k: 3
tasks: 3
concurrency: 3
envs:
  - nemo/CodeExec-v0
  - {env: nemo/Math-v0, k: 2}
  - {env: nemo/MCQA-v0, name: MCQA-algebra, kwargs: {subjects: [abstract algebra]}}
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three runs of one suite: twice with seed 11 and corrupt rate 0.5, once without corruption."""
    root = tmp_path_factory.mktemp("eval")
    suite = root / "suite.yaml"
    suite.write_text(SUITE)
    dirs = {"a": root / "a", "b": root / "b", "clean": root / "clean"}
    for name, corrupt in (("a", "0.5"), ("b", "0.5"), ("clean", "0")):
        argv = ["eval", "--suite", str(suite), "--corrupt-rate", corrupt, "--out", str(dirs[name]), "--quiet"]
        assert main(argv) == 0
    return dirs


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _rows(run: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (run / "rollouts" / f"{name}.jsonl").read_text().splitlines()]


def test_a_run_writes_rollouts_results_and_manifest(runs: dict[str, Path], capsys) -> None:
    manifest, results = _json(runs["a"] / "manifest.json"), _json(runs["a"] / "results.json")
    envs = manifest["reproducible"]["envs"]
    assert list(envs) == ["CodeExec-v0", "Math-v0", "MCQA-algebra"]
    for name, info in envs.items():
        rows = _rows(runs["a"], name)
        assert len(rows) == 3 * info["k"] and len(info["task_ids"]) == 3
        played = sorted(r["task_id"] for r in rows)
        assert played == sorted(t for t in info["task_ids"] for _ in range(info["k"]))  # each task exactly k times
        assert all(r["versions"]["tasks"] == info["tasks_digest"] for r in rows)
        assert results["scores"]["envs"][name]["episodes"] == len(rows)
    assert all(t.startswith("mmlu/abstract_algebra/") for t in envs["MCQA-algebra"]["task_ids"])
    assert envs["MCQA-algebra"]["kwargs"] == {"subjects": ["abstract algebra"]}
    code = envs["CodeExec-v0"]
    assert code["sandbox"]["backend"] == "local" and code["versions"]["verifier"] == "python_function_tests@1"
    assert code["pool_size"] == 164 and code["pool_digest"] != code["tasks_digest"]
    assert manifest["reproducible"]["seed"] == 11 and manifest["reproducible"]["policy"]["corrupt_rate"] == 0.5
    assert manifest["reproducible"]["packages"]["gymnasium"].startswith("1.4")
    assert {"started_at", "finished_at", "duration_s"} <= set(manifest["run"])
    scores = results["scores"]
    assert 0.0 < scores["overall"]["pass@1"] < 1.0  # corruption mixes the rewards
    assert scores["envs"]["Math-v0"]["majority@2"] is not None and "majority@3" not in scores["envs"]["CodeExec-v0"]
    assert set(scores["envs"]["CodeExec-v0"]["pass_at_k"]) == {"1", "2", "3"}
    assert results["timing"]["overall"]["duration_s"] > 0


def test_same_seed_gives_the_same_manifest_and_scores(runs: dict[str, Path]) -> None:
    a, b = _json(runs["a"] / "manifest.json"), _json(runs["b"] / "manifest.json")
    assert a["reproducible"] == b["reproducible"] and a["fingerprint"] == b["fingerprint"]
    assert a["run"]["started_at"] <= b["run"]["started_at"]
    assert _json(runs["a"] / "results.json")["scores"] == _json(runs["b"] / "results.json")["scores"]
    for name in a["reproducible"]["envs"]:  # the same episodes too, whatever order they finished in
        key = lambda r: (r["task_id"], r["seed"])  # noqa: E731
        rows_a, rows_b = sorted(_rows(runs["a"], name), key=key), sorted(_rows(runs["b"], name), key=key)
        assert [(r["reward"], r["messages"][-1]["content"]) for r in rows_a] == [
            (r["reward"], r["messages"][-1]["content"]) for r in rows_b
        ]
    clean = _json(runs["clean"] / "manifest.json")
    assert clean["fingerprint"] != a["fingerprint"]  # the corrupt rate is part of what determines scores


def test_without_corruption_the_reference_policy_passes_everything(runs: dict[str, Path]) -> None:
    scores = _json(runs["clean"] / "results.json")["scores"]
    for name, env in scores["envs"].items():
        assert env["pass@1"] == 1.0 and env["mean_reward"] == 1.0 and env["infra_error_rate"] == 0.0, name


def test_reverify_reproduces_every_reward(runs: dict[str, Path], capsys) -> None:
    assert main(["reverify", str(runs["a"]), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "episodes 24: 24 re-scored, 0 skipped" in out and "every reward and score reproduced" in out


def test_reverify_detects_a_tampered_reward(runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    import shutil

    run = tmp_path / "tampered"
    shutil.copytree(runs["a"], run)
    path = run / "rollouts" / "Math-v0.jsonl"
    rows = _rows(run, "Math-v0")
    victim = next(i for i, r in enumerate(rows) if r["reward"] == 0.0)
    rows[victim]["reward"] = 1.0
    rows[victim]["step_rewards"] = [1.0]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["reverify", str(run), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert f"MISMATCH Math-v0.jsonl:{victim + 1} ({rows[victim]['task_id']}) reward: stored 1.0, re-scored 0.0" in out
    assert (
        "results.json scores.envs.Math-v0.mean_reward: stored" in out
    )  # the scores no longer follow from the rows either


def test_leaderboard_ranks_the_runs(runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    board = build_leaderboard([runs["a"], runs["clean"]])
    assert board["comparable"] and [r["label"] for r in board["runs"]] == ["reference (clean)", "reference (a)"]
    assert board["runs"][0]["overall"]["pass@1"] == 1.0
    table = to_markdown(board)
    assert table.splitlines()[0].startswith(
        "| # | model | overall pass@1 [95% CI] | CodeExec-v0 | MCQA-algebra | Math-v0"
    )
    assert "| 1 | reference (clean) | 1.000 [1.000, 1.000] |" in table
    assert main(["leaderboard", str(runs["a"]), str(tmp_path), "--out", str(tmp_path / "lb")]) == 2  # not a run
    assert "not a `gym-nemo eval` output directory" in capsys.readouterr().err
    assert main(["reverify", str(tmp_path)]) == 2
    assert "is not a complete `gym-nemo eval` run" in capsys.readouterr().err


def test_leaderboard_flags_runs_on_different_tasks(runs: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    other = tmp_path / "other"
    shutil.copytree(runs["clean"], other)
    manifest = _json(other / "manifest.json")
    manifest["reproducible"]["envs"]["Math-v0"]["tasks_digest"] = "0" * 16  # as if it had played other tasks
    (other / "manifest.json").write_text(json.dumps(manifest))
    board = build_leaderboard([runs["a"], other])
    assert not board["comparable"] and len(board["notes"]) == 1 and board["notes"][0].startswith("Math-v0: runs used")
    assert "> Math-v0: runs used different tasks or k" in to_markdown(board)


def test_bad_eval_arguments(tmp_path: Path, capsys) -> None:
    assert main(["eval", "--suite", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "shipped suites" in capsys.readouterr().err
    assert main(["eval", "--policy", "openai", "--out", str(tmp_path / "x")]) == 2
    assert "needs --model" in capsys.readouterr().err
    assert main(["eval", "--policy", "gpt", "--out", str(tmp_path / "x")]) == 2
    assert "unknown policy" in capsys.readouterr().err
    suite = tmp_path / "ids.yaml"
    suite.write_text("envs: [{env: nemo/CodeExec-v0, tasks: [HumanEval/0, HumanEval/9999]}]\n")
    assert main(["eval", "--suite", str(suite), "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "unknown task ids ['HumanEval/9999']" in capsys.readouterr().err


def test_infra_errors_are_reported_beside_the_score_not_in_it(tmp_path: Path, capsys) -> None:
    """Math-v0 with an LLM judge nobody serves: a wrong boxed answer asks the judge, which cannot be
    reached, so that episode is an infra error (kept out of the score), not a 0."""
    suite = tmp_path / "judge.yaml"
    judge = '{base_url: "http://127.0.0.1:9/v1", model: judge, timeout_s: 2, max_retries: 0}'
    suite.write_text(f"seed: 2\nk: 2\ntasks: 6\nenvs:\n  - {{env: nemo/Math-v0, kwargs: {{judge: {judge}}}}}\n")
    run = tmp_path / "run"
    assert main(["eval", "--suite", str(suite), "--corrupt-rate", "0.6", "--out", str(run), "--quiet"]) == 0
    rows = _rows(run, "Math-v0")
    infra = [r for r in rows if r["infra_error"]]
    scored = [r for r in rows if not r["infra_error"]]
    assert infra and scored and all("LLM judge" in r["infra_error"] and r["truncated"] for r in infra)
    scores = _json(run / "results.json")["scores"]["envs"]["Math-v0"]
    assert scores["infra_errors"] == len(infra) and scores["infra_error_rate"] == round(len(infra) / len(rows), 6)
    per_task: dict[str, list[float]] = {}
    for r in scored:
        per_task.setdefault(r["task_id"], []).append(r["reward"])
    task_means = [sum(v) / len(v) for v in per_task.values()]  # scores average tasks, each over its scored samples
    assert scores["mean_reward"] == round(sum(task_means) / len(task_means), 6)
    assert main(["reverify", str(run), "--quiet"]) == 0
    assert f"{len(scored)} re-scored, {len(infra)} skipped (infra errors)" in capsys.readouterr().out


def test_a_policy_that_does_not_answer_stops_the_run_with_a_clear_error(tmp_path: Path, capsys) -> None:
    pytest.importorskip("openai")
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    suite = tmp_path / "suite.yaml"
    suite.write_text("k: 2\ntasks: 4\nconcurrency: 2\nenvs: [nemo/MCQA-v0]\n")
    argv = ["eval", "--suite", str(suite), "--policy", "openai", "--model", "m", "--base-url", url]
    assert main([*argv, "--out", str(tmp_path / "run"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "the policy is not answering: 5 policy calls in a row failed" in err and "APIConnectionError" in err
    rows = _rows(tmp_path / "run", "MCQA-v0")  # what was played is kept, each an infra error
    assert rows and all(r["infra_error"].startswith("policy call failed: APIConnectionError") for r in rows)
