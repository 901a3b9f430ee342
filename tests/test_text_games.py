"""Text games: TextArena single-player games and TextWorld quests, as real packages played offline, through
the envs, the eval suite, the token wrapper and the trainer adapters' episode core."""

from __future__ import annotations

import asyncio
import json
import os
import random
from pathlib import Path

import gymnasium as gym
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("textarena", reason="the [games] extra is not installed")

import gym_nemo  # noqa: F401  (registers the ids)
from gym_nemo.cli import main
from gym_nemo.eval.suite import load_suite
from gym_nemo.registry import TEXTARENA_GAMES
from gym_nemo.rollout.engine import replay

SOLVABLE = ["TowerOfHanoi", "Mastermind", "GuessTheNumber", "Sudoku"]


def play(env: gym.Env, actions) -> tuple[list[float], bool, bool, dict]:
    rewards, terminated, truncated, info = [], False, False, {}
    for action in actions:
        _, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        if terminated or truncated:
            break
    return rewards, terminated, truncated, info


@pytest.mark.parametrize("name", SOLVABLE)
def test_reference_moves_win_and_the_reward_comes_at_the_end(name: str) -> None:
    env = gym.make(f"nemo/TextArena-{name}-v0", num_tasks=3)
    for index in range(3):
        obs, _ = env.reset(options={"task_index": index})
        assert f"seed {index}" in obs
        rewards, terminated, _, info = play(env, env.unwrapped.task.reference)
        assert terminated and rewards[-1] == 1.0 and all(r == 0.0 for r in rewards[:-1])
        assert info["verdict"]["passed"] and "[game over]" in info["messages"][-1]["content"]
    env.close()


def test_the_games_own_invalid_move_rules_apply() -> None:
    env = gym.make("nemo/TextArena-TowerOfHanoi-v0", reward_mode="dense")
    env.reset(seed=0)
    obs, reward, terminated, _, _ = env.step("[A C]")
    assert "You moved disk 1 from A to C" in obs and reward == 0.0 and not terminated
    obs, reward, terminated, _, info = env.step("I move the big disk")
    assert "invalid move" in obs.lower() and not terminated  # TextArena warns once ...
    obs, reward, terminated, _, info = env.step("[B A]")  # a second invalid move in a row: from an empty tower
    assert terminated and not info["verdict"]["passed"]  # ... then ends the game with its completion share
    assert reward == 0.0 and "[game over] Invalid Move" in obs
    env.reset(seed=0)
    assert env.step("")[1] == pytest.approx(-0.1)  # empty and oversized messages never reach the game
    assert env.unwrapped.reward_range == pytest.approx((-1.1, 1.0))
    env.close()


def test_each_env_keeps_its_own_randomness() -> None:
    """TextArena draws from the global ``random``; interleaved envs (and other code drawing from it) must not
    change a game: both replay the solo run move for move."""
    moves = ["[1 2 3 4]", "[2 3 4 5]", "[3 4 5 6]", "[6 5 4 3]", "[1 3 5 2]"]
    solo = gym.make("nemo/TextArena-Mastermind-v0")
    solo.reset(seed=4)
    expected = [solo.step(m)[0] for m in moves]
    a, b = gym.make("nemo/TextArena-Mastermind-v0"), gym.make("nemo/TextArena-Mastermind-v0")
    a.reset(seed=4)
    b.reset(seed=4)
    got_a, got_b = [], []
    for move in moves:
        random.random()
        got_a.append(a.step(move)[0])
        random.seed(123)
        got_b.append(b.step(move)[0])
    assert got_a == expected and got_b == expected
    for env in (solo, a, b):
        env.close()


@pytest.fixture(scope="module")
def hanoi():
    env = gym.make("nemo/TextArena-TowerOfHanoi-v0", reward_mode="dense")
    yield env
    env.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.text(max_size=200),
        st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=60),
        st.builds(lambda s: f"[{s}]", st.text(max_size=20)),
        st.sampled_from(["[A C]", "[A B]", "[Z Z]", "[]", "[" * 500, "x" * 300_000]),
    )
)
def test_fuzzed_moves_never_crash(hanoi, action: str) -> None:
    if hanoi.unwrapped.task is None or hanoi.unwrapped._done:
        hanoi.reset(seed=0)
    obs, reward, _, _, info = hanoi.step(action)
    assert isinstance(obs, str) and hanoi.observation_space.contains(obs)
    obs.encode("utf-8")
    lo, hi = hanoi.unwrapped.reward_range
    assert lo <= reward <= hi and "infra_error" not in info


def test_offline_games_listed_in_the_registry_build_and_reset() -> None:
    for name in TEXTARENA_GAMES:
        env = gym.make(f"nemo/TextArena-{name}-v0", num_tasks=2)
        obs, _ = env.reset(seed=0)
        assert "[GAME]" not in obs and len(obs) > 100, name  # the game's prompt and board, without TextArena's tags
        env.close()


def test_textworld_quest_generated_from_the_seed_offline(tmp_path: Path) -> None:
    import textworld

    env = gym.make("nemo/TextWorld-v0", nb_rooms=2, nb_objects=3, quest_length=2, num_tasks=2, cache_dir=tmp_path)
    obs, info = env.reset(options={"task_index": 1})
    assert "Admissible commands:" in obs and "Score 0/1" in obs
    game_file = env.unwrapped.game_file(1)
    walkthrough = textworld.start(str(game_file), request_infos=textworld.EnvInfos(policy_commands=True))
    commands = walkthrough.reset()["policy_commands"]
    walkthrough.close()
    for hostile in ["", "<action></action>", "<action>  \n</action>", "\x00\x00", "restart", "<action>quit</action>"]:
        obs, reward, terminated, truncated, info = env.step(hostile)
        assert reward == 0.0 and obs.startswith("[error]") and not (terminated or truncated), hostile
    obs, *_ = env.step("ä☃ take " + "go north " * 300)
    assert "Score 0/1" in obs
    rewards, terminated, _, info = play(env, [f"<action>{c}</action>" for c in commands])
    assert terminated and rewards[-1] == 1.0 and sum(rewards) == 1.0 and info["verdict"]["passed"]
    row = {**info["task_row"], "messages": info["messages"]}
    again = gym.make("nemo/TextWorld-v0", nb_rooms=2, nb_objects=3, quest_length=2, num_tasks=2, cache_dir=tmp_path)
    assert replay(again, row).step_rewards == [0.0] * 7 + rewards  # the cached game, replayed from the record
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 1
    env.close()
    again.close()


def test_games_suite_with_the_reference_policy_scores_each_game_and_reverifies(tmp_path: Path, capsys) -> None:
    shipped = load_suite("games")
    assert len(shipped.envs) >= 8
    raw = dict(shipped.raw, tasks=3, k=1)
    suite = tmp_path / "games.yaml"
    suite.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    assert main(["eval", "--suite", str(suite), "--corrupt-rate", "0", "--out", str(out), "--quiet"]) == 0
    scores = json.loads((out / "results.json").read_text())["scores"]["envs"]
    assert set(scores) == {e.name for e in shipped.envs}
    for name in ["FrozenLake", "Taxi-v0", "CliffWalking-v0", *SOLVABLE]:
        assert scores[name]["pass@1"] == 1.0, (name, scores[name])
    assert scores["CliffWalking-v0"]["mean_reward"] == -13.0  # the world's own scale, not clamped to [0, 1]
    assert scores["Taxi-v0"]["mean_reward"] > 1.0
    capsys.readouterr()
    assert main(["reverify", str(out), "--quiet"]) == 0
    assert "every reward and score reproduced" in capsys.readouterr().out


def test_token_level_episodes_through_the_adapters_core(tiny_model_dir) -> None:
    """The engine's ``aplay`` (what the verl agent loop runs) on a game, with the reference moves as the
    generated tokens; and the TRL adapter's dataset names one task per prompt (it finds tasks by prompt)."""
    from transformers import AutoTokenizer

    from gym_nemo.integrations.trl import task_dataset
    from gym_nemo.policies.token import Generation
    from gym_nemo.rollout.engine import EpisodeTrace, aplay
    from gym_nemo.wrappers import TokenEnv

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    env = TokenEnv(gym.make("nemo/TextArena-TowerOfHanoi-v0", num_tasks=2), tokenizer)
    moves = iter(env.unwrapped.tasks.by_id("textarena/TowerOfHanoi-v0/seed-1").reference)

    async def generate(trace: EpisodeTrace) -> Generation:
        ids = [*tokenizer.encode(next(moves), add_special_tokens=False), tokenizer.eos_token_id]
        return Generation.from_server(ids, None, [tokenizer.eos_token_id])

    task = "textarena/TowerOfHanoi-v0/seed-1"
    trace = EpisodeTrace("nemo/TextArena-TowerOfHanoi-v0", "scripted")
    record = asyncio.run(aplay(env, generate, trace, options={"task_id": task}, max_response_tokens=4096))
    assert record.terminated and record.reward == 1.0 and record.num_turns == 7 and record.step_rewards[-1] == 1.0
    assert "You moved disk 1 from A to C" in tokenizer.decode(record.completion_ids)
    env.close()

    rows = list(task_dataset("nemo/FrozenLake-v0", env_kwargs={"num_tasks": 5}))
    assert len({json.dumps(r["prompt"]) for r in rows}) == 5  # one prompt per task, though the lake is the same
    assert [r["task_id"] for r in rows] == [f"FrozenLake-v1/seed-{i}" for i in range(5)]


def test_trl_rollout_func_trains_a_real_grpo_trainer_on_a_world(tiny_model_dir, tmp_path: Path) -> None:
    pytest.importorskip("trl", reason="the [trl] extra is not installed")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from gym_nemo.integrations.trl import EnvRollout, env_reward

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    rollout = EnvRollout("nemo/FrozenLake-v0", env_kwargs={"num_tasks": 4, "max_turns": 2, "reward_mode": "dense"})
    outputs = []

    def recording_rollout(prompts, trainer):
        outputs.append(rollout(prompts, trainer))
        return outputs[-1]

    config = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_generations=2,
        max_steps=1,
        max_completion_length=4,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[env_reward],
        args=config,
        train_dataset=rollout.dataset(),
        processing_class=tokenizer,
        rollout_func=recording_rollout,
    )
    trainer.train()
    rollout.close()
    (out,) = outputs
    assert out["env_turns"] == [2, 2, 2, 2]  # random text is never a move: both turns are notes, the lake stays put
    assert out["env_reward"] == [pytest.approx(-0.2)] * 4
    for ids, mask in zip(out["completion_ids"], out["env_mask"], strict=True):
        runs = sum(1 for i, m in enumerate(mask) if m == 1 and (i == 0 or mask[i - 1] == 0))
        assert runs == 2 and "is not a legal action" in tokenizer.decode(
            [t for t, m in zip(ids, mask, strict=True) if m == 0]
        )
