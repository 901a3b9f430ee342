"""Eval scores on known counts: pass@k against direct combinatorics, infra errors kept out, CIs, suites."""

from __future__ import annotations

import itertools
import math
import random
from fractions import Fraction
from pathlib import Path

import pytest

from gym_nemo.eval import SuiteError, env_scores, load_suite, overall_scores, parse_suite, pass_at_k
from gym_nemo.registry import ENVS


def _direct_pass_at_k(n: int, c: int, k: int) -> Fraction:
    """The share of all k-subsets of n samples (c of them passing) that contain at least one pass."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return Fraction(sum(any(samples[i] for i in s) for s in subsets), len(subsets))


def test_pass_at_k_equals_the_direct_combinatorial_count() -> None:
    for n in range(1, 11):
        for c in range(n + 1):
            for k in range(1, n + 1):
                direct = _direct_pass_at_k(n, c, k)
                assert direct == 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
                assert pass_at_k(n, c, k) == pytest.approx(float(direct), abs=1e-12), (n, c, k)
    # Large n, where the closed form's binomials would overflow a float.
    exact = 1 - Fraction(math.comb(1000 - 7, 100), math.comb(1000, 100))
    assert pass_at_k(1000, 7, 100) == pytest.approx(float(exact), rel=1e-12)
    assert pass_at_k(5, 0, 3) == 0.0 and pass_at_k(5, 5, 1) == 1.0 and pass_at_k(10, 3, 1) == pytest.approx(0.3)


@pytest.mark.parametrize(("n", "c", "k"), [(3, 4, 1), (3, 1, 0), (3, 1, 4), (3, -1, 1)])
def test_pass_at_k_rejects_impossible_counts(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError, match="need 0 <= c <= n"):
        pass_at_k(n, c, k)
    with pytest.raises(TypeError):
        pass_at_k(3.0, 1, 1)  # type: ignore[arg-type]


def _row(task: str, passed: bool, answer: object = ..., infra: bool = False) -> dict:
    """A stored row; ``answer`` (a string or None) is the verifier's extracted answer, left out when not given."""
    details = {} if answer is ... else {"extracted_answer": answer}
    verdict = None if infra else {"passed": passed, "reward": float(passed), "details": details}
    return {
        "task_id": task,
        "reward": float(passed and not infra),
        "verdict": verdict,
        "infra_error": "sandbox down" if infra else None,
        "num_turns": 1,
        "truncated": infra,
    }


KNOWN = {"A": (4, 3), "B": (4, 0), "C": (4, 4), "D": (4, 1)}  # task -> (samples, passes)


def _known_rows() -> list[dict]:
    return [_row(t, i < c) for t, (n, c) in KNOWN.items() for i in range(n)]


def test_env_scores_on_known_counts() -> None:
    scores = env_scores(_known_rows(), k=4, seed=0, name="env")
    assert scores["tasks"] == 4 and scores["episodes"] == 16 and scores["infra_error_rate"] == 0.0
    assert scores["pass@1"] == pytest.approx((3 / 4 + 0 + 1 + 1 / 4) / 4)
    assert scores["mean_reward"] == pytest.approx(8 / 16)
    for k in (2, 3, 4):
        expected = sum(float(_direct_pass_at_k(n, c, k)) for n, c in KNOWN.values()) / 4
        assert scores[f"pass@{k}"] == pytest.approx(expected) and scores["pass_at_k"][str(k)] == scores[f"pass@{k}"]
    lo, hi = scores["pass@1_ci"]
    assert lo < scores["pass@1"] < hi and lo >= 0.0 and hi <= 1.0
    assert scores["majority_comparable"] is False and "majority@4" not in scores  # no extracted answers


def test_infra_errors_are_kept_out_of_the_score_and_reported_beside_it() -> None:
    clean = env_scores(_known_rows(), k=4, seed=0, name="env")
    with_infra = env_scores(
        [*_known_rows(), _row("A", False, infra=True), _row("B", False, infra=True)], k=4, seed=0, name="env"
    )
    for metric in ("pass@1", "pass@2", "pass@4", "mean_reward", "pass@1_ci"):
        assert with_infra[metric] == clean[metric]
    assert with_infra["infra_errors"] == 2 and with_infra["infra_error_rate"] == pytest.approx(2 / 18)
    assert with_infra["scored_episodes"] == 16 and with_infra["episodes"] == 18


def test_scores_do_not_depend_on_row_order_and_cis_are_seeded() -> None:
    rows = _known_rows()
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    assert env_scores(rows, k=4, seed=7, name="x") == env_scores(shuffled, k=4, seed=7, name="x")
    assert env_scores(rows, k=4, seed=7, name="x")["pass@1_ci"] != env_scores(rows, k=4, seed=8, name="x")["pass@1_ci"]


def test_majority_at_k_uses_the_extracted_answers() -> None:
    rows = [
        *(_row("q1", True, "42") for _ in range(2)),
        _row("q1", False, "41"),  # majority 42: right
        *(_row("q2", False, "7") for _ in range(2)),
        _row("q2", True, "8"),  # majority 7: wrong, though pass@3 is 1
        _row("q3", False, "1"),
        _row("q3", True, "0"),
        _row("q3", False, None),  # tie 1 vs 0: the smaller string, "0", which passed
    ]
    scores = env_scores(rows, k=3, seed=0, name="math")
    assert scores["majority_comparable"] is True
    assert scores["majority@3"] == pytest.approx(2 / 3)
    assert scores["pass@3"] == pytest.approx(1.0)


def test_overall_is_the_macro_average_over_envs() -> None:
    small = [_row("t", True), _row("t", False)]
    overall = overall_scores({"big": _known_rows(), "small": small}, {"big": 4, "small": 2}, seed=0)
    big = env_scores(_known_rows(), k=4, seed=0, name="big")
    assert overall["pass@1"] == pytest.approx((big["pass@1"] + 0.5) / 2)
    assert overall["pass@2"] == pytest.approx((big["pass@2"] + 1.0) / 2)
    assert overall["pass@4"] == pytest.approx(big["pass@4"])  # only envs with k >= 4
    assert overall["pass@1_ci"][0] <= overall["pass@1"] <= overall["pass@1_ci"][1]


def test_shipped_suites_load_and_default_covers_every_registered_env() -> None:
    default = load_suite("default")
    assert [e.env_id for e in default.envs] == list(ENVS) and all(e.k == 4 and e.tasks == 16 for e in default.envs)
    quick = load_suite("quick")
    assert quick.name == "quick" and len(quick.envs) == 4 and quick.sampling["temperature"] == 0.0


def test_task_subsets_are_seeded_and_stable() -> None:
    suite = parse_suite({"seed": 3, "tasks": 5, "envs": ["nemo/CodeExec-v0"]})
    pool = [f"t{i}" for i in range(50)]
    first = suite.envs[0].select_tasks(pool, suite.seed)
    assert first == suite.envs[0].select_tasks(pool, suite.seed) and len(set(first)) == 5
    assert first == sorted(first, key=pool.index)  # pool order
    assert first != suite.envs[0].select_tasks(pool, 4)
    assert suite.envs[0].select_tasks(pool[:3], suite.seed) == pool[:3]  # a smaller pool is played whole


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"envs": ["nemo/Nope-v0"]}, "unknown env"),
        ({"k": 0}, "k must be a positive integer"),
        ({"tasks": "some"}, "tasks must be"),
        ({"sampling": {"temprature": 1}}, "unknown sampling keys"),
        ({"envs": ["nemo/CodeExec-v0", "nemo/CodeExec-v0"]}, "names must be unique"),
        ({"colour": 1}, "unknown keys"),
    ],
)
def test_bad_suites_say_what_is_wrong(raw: dict, message: str) -> None:
    with pytest.raises(SuiteError, match=message):
        parse_suite(raw, source="bad.yaml")


def test_a_missing_suite_names_the_shipped_ones(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="shipped suites: default, games, quick"):
        load_suite(str(tmp_path / "nope.yaml"))


def test_sandbox_backend_and_image_digest_come_from_the_sandbox_version() -> None:
    from gym_nemo.eval.manifest import sandbox_info

    digest = "sha256:" + "ab12" * 16
    assert sandbox_info(f"docker:gym-nemo-sandbox:1@{digest}:runsc") == {
        "backend": "docker",
        "version": f"docker:gym-nemo-sandbox:1@{digest}:runsc",
        "image_digest": digest,
    }
    assert sandbox_info("local:namespaces:python3.11.2")["image_digest"] is None
    assert sandbox_info(None) == {"backend": None, "version": None, "image_digest": None}
