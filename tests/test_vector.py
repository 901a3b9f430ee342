"""gym_nemo.make_vec: async text envs return the right strings, never stale ones."""

import json

import numpy as np
import pytest

from gym_nemo import make_vec
from gym_nemo.wrappers.vector import unbatch_info


def printing(text: str) -> str:
    return f"<tool_call>{json.dumps({'name': 'execute_python', 'arguments': {'code': f'print({text!r})'}})}</tool_call>"


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_unicode_observations_come_back_per_env(mode: str) -> None:
    envs = make_vec("nemo/CodeExec-v0", 8, mode)
    try:
        obs, info = envs.reset(seed=123)
        assert len(obs) == 8 and all("```python" in o for o in obs)
        task_ids = [unbatch_info(info, i)["task_id"] for i in range(8)]
        assert len(set(task_ids)) > 1  # seeds differ per sub-env
        for turn in range(3):
            marks = [f"結果 {turn}-{i} é😀\tñ" for i in range(8)]
            obs, rewards, term, trunc, info = envs.step([printing(m) for m in marks])
            for i in range(8):
                assert marks[i] in obs[i], (i, obs[i])
                assert not term[i] and not trunc[i] and rewards[i] == 0.0
            assert unbatch_info(info, 3)["turn"] == turn + 1
    finally:
        envs.close()


def test_same_step_autoreset_hands_back_the_final_info_and_the_next_prompt() -> None:
    envs = make_vec("nemo/CodeExec-v0", 2)
    try:
        envs.reset(seed=0)
        obs, _rewards, term, _trunc, info = envs.step(["no code here", printing("x")])
        assert term[0] and not term[1]
        env0 = unbatch_info(info, 0)
        assert env0["final_info"]["verdict"]["reason"].startswith("no ```python code block")
        assert "[verdict]" in env0["final_obs"]
        assert env0["turn"] == 0 and "```python" in obs[0]  # the next task's prompt, ready to answer
        assert "final_info" not in unbatch_info(info, 1)
    finally:
        envs.close()


def test_shared_memory_is_refused() -> None:
    with pytest.raises(ValueError, match="shared_memory"):
        make_vec("nemo/CodeExec-v0", 2, vector_kwargs={"shared_memory": True})
    with pytest.raises(ValueError):
        make_vec("nemo/CodeExec-v0", 2, "threads")


def test_unbatch_info_handles_masks_and_nesting() -> None:
    info = {
        "a": np.array([1, 2]),
        "_a": np.array([True, False]),
        "d": {"x": np.array([3, 4]), "_x": np.array([1, 1])},
        "_d": np.array([True, True]),
    }
    assert unbatch_info(info, 0) == {"a": 1, "d": {"x": 3}}
    assert unbatch_info(info, 1) == {"d": {"x": 4}}
