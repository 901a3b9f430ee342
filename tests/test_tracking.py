"""Metrics where trainers look: batch metrics of episode records, and each logger backend read back from what it
wrote (TensorBoard's EventAccumulator, the wandb offline run's records, trackio's local SQLite store, JSONL)."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from gym_nemo.rollout.records import EpisodeRecord
from gym_nemo.tracking import JsonlLogger, batch_metrics, make_logger
from gym_nemo.tracking.loggers import scalars


def record(task: str, reward: float, **fields) -> EpisodeRecord:
    return EpisodeRecord(env_id="nemo/TargetChar-v0", task_id=task, task_row={}, messages=[], reward=reward, **fields)


def test_batch_metrics_of_records() -> None:
    records = [
        record("a", 1.0, num_turns=1, verdict={"passed": True}, duration_s=2.0),
        record("a", 0.0, num_turns=3, truncated=True, duration_s=4.0),
        record("b", 0.5, num_turns=2),
        record("b", 0.5, num_turns=2),
        record("c", 0.0, num_turns=1, infra_error="sandbox down"),  # not scored, not a group
    ]
    m = batch_metrics(records, wall_s=10.0, env_s=4.0, policy_s=5.0, prefix="rollout/")
    assert m["rollout/episodes"] == 5 and m["rollout/scored_episodes"] == 4
    assert m["rollout/reward_mean"] == pytest.approx(0.5)
    assert m["rollout/reward_std"] == pytest.approx(math.sqrt(0.125))
    assert m["rollout/pass_rate"] == pytest.approx(0.25)
    assert m["rollout/groups"] == 2 and m["rollout/mixed_group_rate"] == pytest.approx(0.5)  # a mixed, b not
    assert m["rollout/infra_error_rate"] == pytest.approx(0.2)
    assert m["rollout/truncation_rate"] == pytest.approx(0.2)
    assert m["rollout/turns_mean"] == pytest.approx(9 / 5)
    assert m["rollout/env_time_share"] == pytest.approx(0.4) and m["rollout/policy_s"] == 5.0
    assert "rollout/staleness_mean" not in m and "rollout/policy_tokens_mean" not in m  # no versions, no tokens


def test_batch_metrics_tokens_groups_and_staleness() -> None:
    rows = [  # JSONL rows work as records do; groups come from "group" when set
        {"task_id": "t", "group": 0, "reward": 1.0, "prompt_ids": [1, 2, 3], "completion_mask": [1, 1, 0, 1],
         "finish_reasons": ["stop", "length"], "policy_versions": [3, 4]},
        {"task_id": "t", "group": 0, "reward": 1.0, "prompt_ids": [1, 2, 3], "completion_mask": [1, 1],
         "finish_reasons": ["stop"], "policy_versions": [4]},
        {"task_id": "t", "group": 1, "reward": 0.0, "prompt_ids": [1], "completion_mask": [1, 0, 0, 1],
         "finish_reasons": ["stop", "stop"], "policy_versions": [2, 2]},
    ]  # fmt: skip
    m = batch_metrics(rows, current_version=5)
    assert m["groups"] == 2 and m["mixed_group_rate"] == 0.0  # two groups of one task: neither mixed
    assert m["policy_tokens_mean"] == pytest.approx((3 + 2 + 2) / 3)
    assert m["env_tokens_mean"] == pytest.approx((4 + 3 + 3) / 3)
    assert m["cut_generation_rate"] == pytest.approx(1 / 5)
    assert m["staleness_mean"] == pytest.approx((2 + 1 + 3) / 3) and m["staleness_max"] == 3
    assert m["version_switch_rate"] == pytest.approx(1 / 3)
    assert batch_metrics(rows)["staleness_max"] == 2  # against the newest version in the batch
    assert batch_metrics([], wall_s=1.0) == {"episodes": 0.0, "wall_s": 1.0}


def test_batch_metrics_agree_with_the_token_collector(policy) -> None:
    """On real token-level records, the shared metrics equal the collector's own ``token_rollout_metrics``."""
    from functools import partial

    import gym_nemo
    from gym_nemo.policies import SamplingParams
    from gym_nemo.rollout import collect_token_rollouts
    from gym_nemo.wrappers import TokenEnv

    envs = gym_nemo.make_vec(
        "nemo/TargetChar-v0", 4, "sync", wrappers=[partial(TokenEnv, tokenizer=policy.tokenizer)], max_attempts=2
    )
    try:
        records, ours = collect_token_rollouts(
            envs, policy, 4, env_id="nemo/TargetChar-v0", group_size=2, progress=False,
            sampling=SamplingParams(max_tokens=8, seed=0),
        )  # fmt: skip
    finally:
        envs.close()
    m = batch_metrics(records, wall_s=ours.duration_s, env_s=ours.env_s, policy_s=ours.policy_s)
    assert m["reward_mean"] == pytest.approx(ours.mean_reward)
    assert m["mixed_group_rate"] == pytest.approx(ours.mixed_group_rate)
    assert m["turns_mean"] == pytest.approx(ours.mean_turns)
    assert m["truncation_rate"] == pytest.approx(ours.truncation_rate)
    assert m["cut_generation_rate"] == pytest.approx(ours.generation_truncation_rate)
    assert m["policy_tokens_mean"] * 4 == ours.policy_tokens and m["env_tokens_mean"] * 4 == ours.env_tokens
    assert m["env_time_share"] == pytest.approx(ours.env_time_share)


def test_scalars_checks_values_and_steps() -> None:
    assert scalars({"a": 1, "b": None, "c": float("nan"), "d": True, "e": 2.5}, 0) == {"a": 1.0, "d": 1.0, "e": 2.5}
    with pytest.raises(TypeError, match="'s' is not a number"):
        scalars({"s": "high"}, 0)
    for step in (-1, 1.5, None):
        with pytest.raises(ValueError, match="step must be an int"):
            scalars({}, step)
    with pytest.raises(ValueError, match=r"unknown logger backend\(s\) \['mlflow'\]"):
        make_logger("tensorboard,mlflow", log_dir="unused")


METRICS = [{"rollout/reward_mean": 0.25 * s, "rollout/infra_error_rate": 0.0, "rollout/staleness_mean": None}
           for s in range(3)]  # fmt: skip


def test_jsonl_logger(tmp_path: Path) -> None:
    with JsonlLogger(tmp_path / "m.jsonl") as logger:
        for step, m in enumerate(METRICS):
            logger.log(m, step)
    lines = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [0, 1, 2]
    assert lines[2]["metrics"] == {"rollout/reward_mean": 0.5, "rollout/infra_error_rate": 0.0}


def test_tensorboard_event_files_read_back(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the [tensorboard] extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with make_logger("tensorboard", log_dir=tmp_path, run_name="run1") as logger:
        for step, m in enumerate(METRICS):
            logger.log(m, step)
    events = EventAccumulator(str(tmp_path / "tensorboard" / "run1"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["rollout/infra_error_rate", "rollout/reward_mean"]
    assert [(e.step, e.value) for e in events.Scalars("rollout/reward_mean")] == [(0, 0.0), (1, 0.25), (2, 0.5)]


def wandb_records(path: Path) -> list:
    """The protobuf records of a wandb run file (a LevelDB-style log: 32 KiB blocks of chunks with a 7-byte header
    after the file's own 7-byte ``:W&B`` header; wandb no longer ships a Python reader)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        room = 32768 - pos % 32768
        if room < 7:  # block trailer padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def test_wandb_offline_run_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb", reason="the [wandb] extra is not installed")
    monkeypatch.setenv("WANDB_SILENT", "true")
    with make_logger("wandb", log_dir=tmp_path, run_name="run1", config={"lr": 0.001}) as logger:
        for step, m in enumerate(METRICS):
            logger.log(m, step)
    [run_file] = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_records(run_file)
    history = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            items = r.history.item
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items})
    assert [h["_step"] for h in history] == [0, 1, 2]
    assert [h["rollout/reward_mean"] for h in history] == [0.0, 0.25, 0.5]
    assert all("rollout/staleness_mean" not in h for h in history)
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.display_name == "run1" and run.project == "gym_nemo"
    assert {item.key: json.loads(item.value_json) for item in run.config.update}["lr"] == 0.001


def test_trackio_local_store_read_back(tmp_path: Path) -> None:
    import importlib.util
    import sys

    if importlib.util.find_spec("trackio") is None:
        pytest.skip("the [trackio] extra is not installed")
    if "trackio" in sys.modules:  # it reads its store folder once, on import
        pytest.skip("trackio was imported earlier in this process with another store folder")
    with make_logger("trackio", log_dir=tmp_path, project="gym_nemo_test", run_name="run1") as logger:
        for step, m in enumerate(METRICS):
            logger.log(m, step)
    from trackio.sqlite_storage import SQLiteStorage

    assert (tmp_path / "trackio" / "gym_nemo_test.db").exists()
    assert SQLiteStorage.get_runs("gym_nemo_test") == ["run1"]
    logs = SQLiteStorage.get_logs("gym_nemo_test", "run1")
    assert [(x["step"], x["rollout/reward_mean"]) for x in logs] == [(0, 0.0), (1, 0.25), (2, 0.5)]
    assert all("rollout/staleness_mean" not in x for x in logs)
