"""NeMo Gym rollouts re-score to NeMo Gym's own stored reward."""

import json
from pathlib import Path

import pytest

from gym_nemo.integrations.nemo_gym import response_text, score

DATA = Path(__file__).resolve().parent / "data" / "nemo_gym"


def rollouts(server: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / server / "example_rollouts.jsonl").read_text().splitlines()]


def test_evalplus_rollouts_rescore_to_the_stored_reward() -> None:
    for row in rollouts("evalplus"):
        assert score(row, "evalplus")["reward"] == row["reward"]


def test_response_text_reads_the_last_assistant_message() -> None:
    response = {
        "output": [
            {"type": "reasoning", "summary": []},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi"}]},
        ]
    }
    assert response_text(response) == "hi"
    assert response_text({"output": []}) == ""


def test_unknown_server_and_missing_response() -> None:
    with pytest.raises(ValueError, match="no gym_nemo verifier"):
        score({}, "nope")
    with pytest.raises(ValueError, match="needs 'response'"):
        score({"responses_create_params": {"input": "x"}}, "evalplus")
