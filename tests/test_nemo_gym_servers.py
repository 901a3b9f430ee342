"""NeMo Gym's own resources servers, run for real behind nemo/NeMoGym-v0 (gym_nemo.nemo_gym).

Needs the NeMo Gym venv (``gym-nemo nemo-gym setup offline``; scripts/test.sh makes it where a Python >= 3.12
exists); the tests that need it skip, saying so, elsewhere. Each server process is real (NeMo Gym 0.4.0's
app on uvicorn), shared by the tests as by envs."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import httpx
import pytest
from gymnasium.utils.env_checker import check_env

import gym_nemo
from gym_nemo.core.task import read_jsonl
from gym_nemo.nemo_gym import runtime
from gym_nemo.nemo_gym.server import ServerStartError, server_pid, start_server
from gym_nemo.nemo_gym.table import judge_servers, offline_servers, servers
from gym_nemo.testing.nemo_gym_coverage import (
    WEATHER_ROW,
    RecordedJudge,
    replay,
    replay_server,
    replayed_as_stored,
    rollout_rows,
    server_dir,
)


def _runtime_ready() -> str | None:
    try:
        runtime.package_dir()
    except runtime.RuntimeMissing as exc:
        return str(exc)
    wanted = set(offline_servers()) | set(judge_servers())
    missing = sorted(wanted - set(runtime.read_stamp().get("servers") or []))  # type: ignore[arg-type]
    return f"requirements of {missing[:3]}... not installed; run `gym-nemo nemo-gym setup offline`" if missing else None


needs_runtime = pytest.mark.skipif(_runtime_ready() is not None, reason=f"NeMo Gym runtime: {_runtime_ready()}")
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "SF"}}\n</tool_call>'


# ---------------------------------------------------------------- without the runtime
def test_ids_exist_before_the_runtime_and_say_how_to_get_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert len(offline_servers()) >= 35  # measured on NeMo Gym 0.4.0: 39 (docs/nemo_gym_servers.md)
    for name in offline_servers():
        assert f"nemo-gym/{name}-v0" in gym.registry
    assert "nemo/NeMoGym-v0" in gym.registry
    monkeypatch.setenv("GYM_NEMO_NEMO_GYM_VENV", str(tmp_path / "absent"))
    with pytest.raises(runtime.RuntimeMissing, match="gym-nemo nemo-gym setup mcqa"):
        gym.make("nemo-gym/mcqa-v0")


def test_cli_lists_every_server_with_its_status(capsys: pytest.CaptureFixture[str]) -> None:
    from gym_nemo.cli import main

    assert main(["nemo-gym", "list"]) == 0
    out = capsys.readouterr().out
    assert "94 NeMo Gym resources servers" in out
    assert re.search(r"^mcqa +runs offline", out, re.M) and re.search(r"^aalcr +needs an LLM judge", out, re.M)
    assert main(["nemo-gym", "list", "--status", "offline"]) == 0
    assert capsys.readouterr().out.count("runs offline") == len(offline_servers())
    assert main(["list"]) == 0
    assert "nemo-gym/mcqa-v0" in capsys.readouterr().out


def test_no_python_312_names_where_it_looked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "python_candidates", lambda: ["/nonexistent/python3.12"])
    with pytest.raises(runtime.RuntimeMissing, match=r"Python >= 3\.12.*pyenv.*/nonexistent/python3\.12"):
        runtime.find_python()


def test_unknown_server_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"no NeMo Gym server 'nope'.*structured_outputs"):
        gym.make("nemo/NeMoGym-v0", server="nope")


def test_requirements_drop_the_editable_nemo_gym_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "srv"
    folder.mkdir()
    (folder / "requirements.txt").write_text("-e nemo-gym[dev] @ ../../\n# a comment\nmath-verify==0.8.0  # pinned\n")
    monkeypatch.setattr(runtime, "server_dir", lambda name: folder)
    assert runtime.requirements("srv") == ["math-verify==0.8.0"]


def test_recorded_output_becomes_one_action_per_assistant_turn() -> None:
    from gym_nemo.testing.nemo_gym_coverage import recorded_actions

    response = {
        "output": [
            {"type": "reasoning", "summary": []},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me look."}]},
            {"type": "function_call", "name": "get_weather", "arguments": '{"city": "SF"}', "call_id": "c1"},
            {"type": "function_call_output", "call_id": "c1", "output": "cold"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "It is cold."}]},
        ]
    }
    first, final = recorded_actions(response)
    assert first.startswith("Let me look.\n<tool_call>") and '"city": "SF"' in first
    assert final == "It is cold."


# ---------------------------------------------------------------- coverage: every offline server, every rollout
@needs_runtime
@pytest.mark.parametrize("server", offline_servers())
def test_shipped_rollouts_replay_to_their_stored_reward(server: str) -> None:
    """Every shipped rollout, played through gym.make, pays what the table says: its stored reward on the rows
    counted in ``replay``; a row that does not (verify servers) pays exactly what the server's own /verify says
    of the stored response, so the difference is the data's, not the adapter's."""
    entry = servers()[server]
    results = replay_server(server)
    matched = sum(replayed_as_stored(r) for r in results)
    assert not any(r["infra_error"] for r in results), results
    random = "random" in entry["note"]  # a server whose reset takes no seed deals new episodes every time
    if not random:  # at least the table's count: NeMo Gym's own check of some rows depends on the machine's speed
        # (math_with_judge's (1+sqrt3)^4033 row: math-verify's 5 s limit inside its server), so more may match
        table_matched, table_total = (int(x) for x in entry["replay"].split("/"))
        assert len(results) == table_total and matched >= table_matched, results
    env = gym.make(f"nemo-gym/{server}-v0")
    try:
        for n, first in enumerate(results):  # a replay that misses the stored reward gets what the server gives
            # the stored response; a check inside the server that can time out (math-verify's 5 s limit, on a
            # loaded machine) gets two more tries, replaying and asking the server's own score afresh each time
            tries = [first]
            while _misses_its_direct_score(tries[-1]) and len(tries) < 3:
                tries.append(replay(env, rollout_rows(server)[n], _examples(server)))
            assert not _misses_its_direct_score(tries[-1]), tries
        if not random:  # check_env's determinism check needs a reset that takes the seed
            check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.close()


def _misses_its_direct_score(result: dict[str, Any]) -> bool:
    """A verify server's replay that pays neither the stored reward nor what the server says of the stored
    response itself (the adapter's fault, unless the server's check depends on time)."""
    if result["direct"] is None or result["reward"] == pytest.approx(result["expected"]):
        return False
    return result["reward"] != pytest.approx(result["direct"])


def _examples(server: str) -> list[dict[str, Any]]:
    path = server_dir(server) / "data" / "example.jsonl"
    return read_jsonl(path) if path.is_file() else []


def _any_prompt_judge(messages: list[dict[str, str]]) -> str:
    """A judge for arbitrary answers: a verdict in each judge server's label format (it grades them wrong)."""
    return "The answer is not correct.\nJudgement: NO\nGRADE: B\n[[A!=B]]"


@needs_runtime
@pytest.mark.parametrize("server", [n for n in judge_servers() if servers()[n].get("judge_refs")])
def test_judge_servers_replay_with_the_judgments_nemo_gym_recorded(server: str) -> None:
    """A server that scores with an LLM judge, its judge calls answered with the judge texts its rollouts store
    (RecordedJudge): at least the table's count comes back as stored, each of those with every judge call
    answered from the record (physics_judge's rule check decides its rows alone: no call); a row that does not
    gets what the server gives the stored response."""
    entry = servers()[server]
    judge = RecordedJudge()
    results = replay_server(server, judge=judge)
    matched = sum(replayed_as_stored(r) for r in results)
    table_matched, table_total = (int(x) for x in entry["replay"].split("/"))
    assert len(results) == table_total and matched >= table_matched, results
    for r in results:
        if r["direct"] is not None and not r["judge_missed"] and r["reward"] != pytest.approx(r["expected"]):
            assert r["reward"] == pytest.approx(r["direct"]), r
    if table_matched == table_total:  # check_env's random actions get a judge that answers any prompt
        env = gym.make(f"nemo-gym/{server}-v0", judge=_any_prompt_judge)
        try:
            check_env(env.unwrapped, skip_render_check=True)
        finally:
            env.close()


def test_a_judge_server_without_a_judge_says_how_to_give_it_one() -> None:
    with pytest.raises(ValueError, match=r"simpleqa.*LLM judge.*judge=\{'base_url'"):
        gym.make("nemo-gym/simpleqa-v0")
    with pytest.raises(ValueError, match=r"verifif.*LLM judge"):
        gym.make("nemo-gym/verifif-v0")
    with pytest.raises(TypeError, match="judge must be"):
        gym.make("nemo/NeMoGym-v0", server="simpleqa", judge=42)


@needs_runtime
def test_a_server_that_asks_its_judge_as_an_openai_api_gets_the_judge_server() -> None:
    """verifif asks its judge through an OpenAI base URL (``judge_base_url``), not a model server name: with
    ``judge=`` that URL is the judge server's, so its LLM-judged instructions are judged (without it, verifif
    pays a silent 0: "Judge unavailable.")."""
    asked: list[list[dict[str, str]]] = []

    def judge(messages: list[dict[str, str]]) -> str:
        asked.append(messages)
        return "YES"

    env = gym.make("nemo-gym/verifif-v0", judge=judge)
    result = replay(env, rollout_rows("verifif")[0], _examples("verifif"))
    env.close()
    assert asked and "LLM-Judge" in asked[0][0]["content"]
    assert result["reward"] == result["expected"] == 1.0 and not result["infra_error"]


@needs_runtime
def test_judge_endpoint_is_an_openai_compatible_server(tmp_path: Path) -> None:
    """judge={"base_url", "model"}: simpleqa's judge calls go through gym_nemo's judge server to a real
    OpenAI-compatible server on loopback (the agent gateway over a scripted chat policy), and its grade is
    the reward: "A" pays 1, "B" pays 0, a judge that cannot be reached is an infra error, never 0."""
    pytest.importorskip("fastapi")
    from gym_nemo.agents.backends import PolicyBackend
    from gym_nemo.agents.gateway import Gateway
    from gym_nemo.testing.scripted_policy import ScriptedChatPolicy
    from gym_nemo.testing.tiny_model import build_tokenizer

    grade = ["A"]
    policy = ScriptedChatPolicy(build_tokenizer("chatml"), reply=lambda prompt: grade[0])
    with Gateway(PolicyBackend(policy)) as gateway:
        run = gateway.open_run()
        judge = {"base_url": run.base_url, "model": "scripted", "max_retries": 0, "timeout_s": 30.0}
        env = gym.make("nemo-gym/simpleqa-v0", judge=judge)
        rewards = []
        for letter in ("A", "B"):
            grade[0] = letter
            env.reset(options={"task_index": 0})
            _, reward, terminated, _, info = env.step("My answer.")
            assert terminated and "infra_error" not in info
            rewards.append(reward)
        assert rewards == [1.0, 0.0]
        asked = [c for c in run.calls if c.request.get("messages")]
        assert len(asked) == 2 and "My answer." in json.dumps(asked[0].request["messages"])
    env.reset(options={"task_index": 0})  # the judge endpoint is gone: not a grade
    _, reward, terminated, truncated, info = env.step("My answer.")
    assert truncated and not terminated and "infra_error" in info and reward == 0.0
    env.close()


# ---------------------------------------------------------------- the env contract
@needs_runtime
def test_tool_calls_reach_the_server_in_the_episode_session() -> None:
    env = gym.make("nemo/NeMoGym-v0", server="example_session_state_mgmt")
    _, info = env.reset(options={"task_index": 0})
    assert info["tools"], "the row's tools are the env's tools"
    names = [t["function"]["name"] for t in info["tools"]]
    assert "increment_counter" in names and "get_counter_value" in names
    get = '<tool_call>{"name": "get_counter_value", "arguments": {}}</tool_call>'
    call = '<tool_call>{"name": "increment_counter", "arguments": {"count": 3}}</tool_call>'
    start = json.loads(env.step(get)[0])["count"]
    env.step(call)
    env.step(call)
    assert json.loads(env.step(get)[0])["count"] == start + 6  # state kept across calls: one session per episode
    env.reset(options={"task_index": 0})
    assert json.loads(env.step(get)[0])["count"] == start  # a new episode, a new session
    env.close()


@needs_runtime
def test_gymnasium_server_pays_per_step_rewards() -> None:
    env = gym.make("nemo-gym/example_multi_turn_gymnasium-v0")
    obs, _ = env.reset(options={"task_index": 0})
    obs, reward, terminated, truncated, _ = env.step("Paris.")
    assert (reward, terminated, truncated) == (0.0, False, False) and "population" in obs
    env.step("About 2 million.")
    obs, reward, terminated, truncated, info = env.step("The Eiffel Tower.")
    assert (reward, terminated) == (1.0, True) and info["episode_return"] == 1.0
    env.close()


@needs_runtime
def test_served_over_http_and_as_a_trl_environment() -> None:
    """A NeMo Gym env works like any other: behind `gym-nemo serve` (sessions over HTTP) and as TRL's
    environment_factory (the row's tools are the environment's methods)."""
    pytest.importorskip("fastapi", reason="gym-nemo serve needs the serve extra")
    pytest.importorskip("trl", reason="the TRL adapter needs the trl extra")
    from gym_nemo.integrations.trl import environment_factory, environment_reward, task_dataset
    from tests.serving import served

    env_id = "nemo-gym/example_single_tool_call-v0"
    with served(env_id) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        sid = client.post("/sessions").json()["session_id"]
        client.post(f"/sessions/{sid}/reset", json={"seed": 0}).raise_for_status()
        tool = client.post(f"/sessions/{sid}/step", json={"action": CALL}).json()
        assert "cold" in tool["observation"] and tool["terminated"] is False
        final = client.post(f"/sessions/{sid}/step", json={"action": "It is cold."}).json()
        assert final["terminated"] is True and final["reward"] == 1.0

    environment = environment_factory(env_id)()
    environment.reset(**task_dataset(env_id, num_rows=1)[0])
    assert "cold" in environment.get_weather(city="SF")  # a method named for the row's tool, run by the server
    assert environment_reward(["It is cold."], environments=[environment]) == [1.0]
    environment._env.close()


@needs_runtime
def test_a_move_the_server_refuses_is_not_played_and_the_observation_says_why() -> None:
    """grl_sokoban answers an unparseable move with 400: the move is not played (the board is unchanged, the
    episode goes on, the step pays 0), never an infrastructure error; a lost session stays one."""
    env = gym.make("nemo/NeMoGym-v0", server="grl_sokoban")
    env.reset(options={"task_index": 0})  # the row's seed: the same room every time
    moved_at_once = env.step("<action>Down</action>")[0]
    env.reset(options={"task_index": 0})
    obs, reward, terminated, truncated, info = env.step("I do not know.")
    assert (reward, terminated, truncated) == (0.0, False, False) and "infra_error" not in info
    assert "Unable to parse action" in info["invalid_action"] and obs.startswith("[not a valid move")
    assert info["messages"][-1] == {"role": "user", "content": obs}
    obs, reward, terminated, truncated, info = env.step("<action>Down</action>")
    assert "invalid_action" not in info and "infra_error" not in info and obs == moved_at_once  # world unchanged
    env.unwrapped.client.new_session(None, None)  # the session cookie gone: the server's 400 names the session
    _, reward, _, truncated, info = env.step("<action>Down</action>")
    assert truncated and "Session not initialized" in info["infra_error"] and reward == 0.0
    env.close()


@needs_runtime
def test_make_vec_token_env_and_collector(tmp_path: Path) -> None:
    from gym_nemo.rollout import collect_rollouts
    from gym_nemo.testing.tiny_model import build_tokenizer
    from gym_nemo.wrappers import TokenEnv

    class Scripted:
        name = "scripted"

        def act(self, observations: Any, infos: Any) -> list[str]:
            return [CALL if info.get("turn", 0) == 0 else "It is cold in SF." for info in infos]

    envs = gym_nemo.make_vec("nemo-gym/example_single_tool_call-v0", 2, "sync")
    try:
        records, _ = collect_rollouts(
            envs, Scripted(), 4, env_id="nemo-gym/example_single_tool_call-v0", out=tmp_path / "r.jsonl", progress=False
        )
    finally:
        envs.close()
    assert len(records) == 4 and all(r.reward == 1.0 for r in records)
    assert (tmp_path / "r.jsonl").read_text().count("\n") == 4

    tok = build_tokenizer("chatml")
    env = TokenEnv(gym.make("nemo-gym/example_single_tool_call-v0"), tok)
    env.reset(options={"task": WEATHER_ROW})
    obs, _, _, _, info = env.step(tok.encode(CALL, add_special_tokens=False) + env.end_of_turn_ids)
    assert "cold" in tok.decode(obs)  # the server's tool result reaches the token stream
    ids = tok.encode("It is cold.", add_special_tokens=False) + env.end_of_turn_ids
    _, reward, terminated, _, info = env.step(ids)
    assert terminated and reward == 1.0 and sum(info["loss_mask"]) > 0
    env.close()


# ---------------------------------------------------------------- faults and bad input
@needs_runtime
@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"prompt": "x"}, "responses_create_params"),
        ({"responses_create_params": {"input": []}}, "responses_create_params.input"),
        ({"responses_create_params": {"input": "x", "tools": "get_weather"}}, "responses_create_params.tools"),
        (
            {"responses_create_params": {"input": "x", "tools": [{"type": "function"}]}},
            r"responses_create_params\.tools\[0\]",
        ),
    ],
)
def test_rows_of_the_wrong_shape_name_the_field(row: dict[str, Any], field: str) -> None:
    env = gym.make("nemo-gym/example_single_tool_call-v0")
    with pytest.raises(ValueError, match=field):
        env.reset(options={"task": row})
    with pytest.raises(ValueError, match=field):
        gym.make("nemo-gym/example_single_tool_call-v0", data=[row])
    env.close()


@needs_runtime
def test_server_error_status_is_an_infra_error_not_a_reward() -> None:
    env = gym.make("nemo-gym/example_single_tool_call-v0")
    bad = {"responses_create_params": {"input": "hi", "temperature": "hot"}}  # /verify answers 422
    env.reset(options={"task": bad})
    _, _, terminated, truncated, info = env.step("an answer")
    assert truncated and not terminated and "422" in info["infra_error"] and info["reward_components"] == {}
    env.close()


@needs_runtime
def test_server_killed_mid_episode_truncates_and_the_next_episode_restarts_it() -> None:
    env = gym.make("nemo-gym/example_single_tool_call-v0")
    env.reset(options={"task": WEATHER_ROW})
    env.step(CALL)
    pid = server_pid("example_single_tool_call")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    _, reward, terminated, truncated, info = env.step("It is cold.")
    assert truncated and not terminated and "unreachable" in info["infra_error"]
    env.reset(options={"task": WEATHER_ROW})
    new_pid = server_pid("example_single_tool_call")
    assert new_pid is not None and new_pid != pid
    env.step(CALL)
    _, reward, terminated, truncated, info = env.step("It is cold.")
    assert terminated and reward == 1.0 and "infra_error" not in info
    env.close()


@needs_runtime
def test_a_server_stops_on_sigterm_with_a_request_in_flight() -> None:
    """SIGTERM (and the idle exit, which takes the same path) ends a server within uvicorn's bounded graceful
    shutdown even while a request waits (here simpleqa's /verify on a judge that does not answer: unbounded, the
    process outlived both), and the episode in flight ends as an infrastructure error."""
    release = threading.Event()

    def stalled_judge(messages: list[dict[str, str]]) -> str:
        release.wait(60)
        return "A"

    env = gym.make("nemo-gym/simpleqa-v0", judge=stalled_judge)
    env.reset(options={"task_index": 0})
    pid = server_pid("simpleqa", None, env.unwrapped.client.model_url)
    assert pid is not None
    outcome: list[Any] = []
    stepping = threading.Thread(target=lambda: outcome.append(env.step("My answer.")))
    stepping.start()
    time.sleep(1.0)  # the /verify request now waits on the judge
    os.kill(pid, signal.SIGTERM)
    try:
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.1)
        assert not Path(f"/proc/{pid}").exists(), "the server outlived SIGTERM"
    finally:
        release.set()
        stepping.join(30)
        env.close()
    _, reward, terminated, truncated, info = outcome[0]
    assert truncated and not terminated and "infra_error" in info and reward == 0.0


@needs_runtime
def test_a_server_that_cannot_start_names_itself_and_what_is_missing() -> None:
    missing = [n for n, e in servers().items() if e["status"] == "internet" and "needs" in e["note"]]
    name = missing[0]
    with pytest.raises(ServerStartError, match=rf"{name}.*(missing|failed)"):
        start_server(name, start_timeout_s=120)
