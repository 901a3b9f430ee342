"""Differential conformance: every native family scores NeMo Gym's rows and their variants as NeMo Gym's real
servers did (tests/data/nemo_gym/conformance, made by scripts/nemo_gym_conformance.py with nemo-gym 0.4.0);
each disagreement is a listed one, with the reason NeMo Gym is wrong."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from gym_nemo.integrations.nemo_gym_conformance import KNOWN_DISAGREEMENTS, compare, load_cases

CASES = load_cases(Path(__file__).resolve().parent / "data" / "nemo_gym" / "conformance")
FAMILIES = (
    "math_with_judge",
    "polymath",
    "mcqa",
    "math_with_code",
    "reasoning_gym",
    "code_gen",
    "instruction_following",
    "ifbench",
)


def test_every_native_family_has_cases() -> None:
    assert set(FAMILIES) <= set(CASES)
    for server in FAMILIES:
        assert len(CASES[server]) >= 10, server
    known_servers = {server for server, _ in KNOWN_DISAGREEMENTS}
    assert known_servers <= set(CASES)


@pytest.mark.parametrize("server", FAMILIES)
def test_native_verifier_agrees_with_nemo_gym(server: str) -> None:
    outcome = compare(CASES[server])
    assert outcome.unexplained == {}
    listed = {case for s, case in KNOWN_DISAGREEMENTS if s == server}
    assert set(outcome.disagree) == listed  # a listed disagreement that went away must leave the list


# ---------------------------------------------------------------------------------------------- live servers
@pytest.fixture(scope="module")
def live_answer() -> Iterator[Callable[[Mapping[str, Any]], Mapping[str, Any]]]:
    """A callable ``case -> {"status", "reward", ...}`` that posts ``case["row"]`` to the real NeMo Gym server
    ``case["server"]``, started by the nemo-gym runtime (``gym_nemo.nemo_gym``; config ``grading_mode`` from
    ``case["env_kwargs"]`` where set), with a ``/seed_session`` first. Skips, saying why, without the runtime."""
    from gym_nemo.nemo_gym.runtime import RuntimeMissing, installed_servers
    from gym_nemo.nemo_gym.server import NeMoGymClient, ServerHTTPError, drop_nulls

    try:
        installed = set(installed_servers())
    except (RuntimeMissing, OSError) as exc:
        pytest.skip(f"nemo-gym runtime not installed: {exc}")
    clients: dict[str, NeMoGymClient] = {}

    def answer(case: Mapping[str, Any]) -> Mapping[str, Any]:
        server = case["server"]
        if server not in installed:
            pytest.skip(f"{server} is not in the installed nemo-gym")
        config = {"grading_mode": case["env_kwargs"]["grading_mode"]} if "grading_mode" in case["env_kwargs"] else None
        key = f"{server}:{config}"
        client = clients.get(key) or clients.setdefault(key, NeMoGymClient(server, config))
        row = drop_nulls(dict(case["row"]))
        try:
            client.new_session(row)
            reply = client.post("/verify", row).json()
        except ServerHTTPError as exc:
            return {"status": exc.status}
        return {"status": 200, "reward": reply.get("reward"), "result": reply.get("result")}

    yield answer
    for client in clients.values():
        client.close()


@pytest.mark.parametrize("server", ("math_with_judge", "polymath", "mcqa", "math_with_code", "reasoning_gym"))
def test_native_verifier_agrees_with_the_live_server(server: str, live_answer) -> None:
    outcome = compare(CASES[server], answer=live_answer)
    assert outcome.unexplained == {}
