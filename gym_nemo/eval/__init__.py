"""Leaderboard evaluation: suites (YAML), a runner that writes rollouts, scores and a manifest, ``reverify``,
and the merged leaderboard (markdown, JSON, HTML). ``pass_at_k(n, c, k)`` is the unbiased estimator.

Heavy parts (pyyaml, plotly, the policies) are imported when used, so ``import gym_nemo.eval`` is cheap.
"""

from gym_nemo.eval.metrics import env_scores, overall_scores, pass_at_k
from gym_nemo.eval.runner import PolicyConfig, run_suite
from gym_nemo.eval.suite import Suite, SuiteError, load_suite, parse_suite

__all__ = [
    "PolicyConfig",
    "Suite",
    "SuiteError",
    "env_scores",
    "load_suite",
    "overall_scores",
    "parse_suite",
    "pass_at_k",
    "run_suite",
]
