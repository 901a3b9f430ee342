"""``gym-nemo serve`` over real HTTP on loopback: sessions, idempotent retries, bad input, limits, expiry,
shutdown, and NeMo Gym's resources-server routes (``/verify`` rewards equal ``score()`` on NeMo Gym's rows)."""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi", reason="gym-nemo serve needs the serve extra")

from gym_nemo.integrations.nemo_gym import join_rollouts, score
from tests.serving import served, start_server
from tests.test_nemo_gym import SLOW_CHECK_S

DATA = Path(__file__).resolve().parent / "data" / "nemo_gym"
# A verification that always overruns its bound: each such step holds the verifier for verify_timeout_s.
SLOW_ANSWER = r"\boxed{10^{10^{10^{10^{10}}}}}"


def rows(server: str, name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / server / name).read_text().splitlines()]


@pytest.fixture(scope="module")
def math_server():
    """Checks get time enough for NeMo Gym's slow row (see tests/test_nemo_gym.py, SLOW_CHECK_S)."""
    with served("nemo/Math-v0", "--env-kwargs", json.dumps({"verify_timeout_s": SLOW_CHECK_S})) as server:
        yield server


@pytest.fixture(scope="module")
def limited_server():
    """Small limits: 2 env calls in flight, 3 sessions, 5 s idle expiry, 64 kB bodies, slow verifications."""
    args = ["--max-pending", "2", "--max-sessions", "3", "--session-ttl", "5", "--max-body-bytes", "65536"]
    with served("nemo/Math-v0", *args, "--env-kwargs", '{"verify_timeout_s": 1.5}') as server:
        yield server


def new_session(client: httpx.Client) -> str:
    reply = client.post("/sessions")
    assert reply.status_code == 200, reply.text
    return reply.json()["session_id"]


def test_episode_over_http_matches_the_in_process_env(math_server) -> None:
    import gymnasium as gym

    local = gym.make("nemo/Math-v0")
    with httpx.Client(base_url=math_server.url, timeout=30) as client:
        sid = new_session(client)
        reset = client.post(f"/sessions/{sid}/reset", json={"seed": 7}).json()
        obs, info = local.reset(seed=7)
        assert reset["observation"] == obs and reset["info"]["task_id"] == info["task_id"]
        answer = local.unwrapped.task.reference
        step = client.post(f"/sessions/{sid}/step", json={"action": answer}).json()
        expected = local.step(answer)
        assert (step["observation"], step["reward"], step["terminated"], step["truncated"]) == expected[:4]
        assert step["reward"] == 1.0 and step["info"]["verdict"]["passed"] is True
        assert step["info"]["task_row"]["expected_answer"] == local.unwrapped.task.row["expected_answer"]
        # A non-str action gets the env's own explanatory observation, as in process.
        client.post(f"/sessions/{sid}/reset", json={"seed": 7})
        odd = client.post(f"/sessions/{sid}/step", json={"action": 42}).json()
        assert "must be a str" in odd["observation"] and odd["terminated"] is False
        assert client.delete(f"/sessions/{sid}").json() == {"closed": sid}
        assert client.post(f"/sessions/{sid}/step", json={"action": "x"}).status_code == 404
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["env_id"] == "nemo/Math-v0"
        metrics = client.get("/metrics").json()
        assert metrics["counts"]["steps"] >= 2 and metrics["step_latency_p50_s"] > 0
    local.close()


def test_a_retried_request_id_is_applied_once(math_server) -> None:
    with httpx.Client(base_url=math_server.url, timeout=30) as client:
        sid = new_session(client)
        client.post(f"/sessions/{sid}/reset", json={"seed": 1})
        first = client.post(f"/sessions/{sid}/step", json={"action": "thinking...", "request_id": "r1"}).json()
        again = client.post(f"/sessions/{sid}/step", json={"action": "thinking...", "request_id": "r1"}).json()
        assert again == first
        assistant = [m for m in first["info"]["messages"] if m["role"] == "assistant"]
        assert len(assistant) == 1 and first["info"]["turn"] == 1
        assert first["terminated"] is True  # Math-v0: any message without tool calls is the final answer
        over = client.post(f"/sessions/{sid}/step", json={"action": "more", "request_id": "r2"})
        assert over.status_code == 409 and "episode is over" in over.json()["error"]
        # create is idempotent too
        a = client.post("/sessions", json={"request_id": "create-1"}).json()
        b = client.post("/sessions", json={"request_id": "create-1"}).json()
        assert a["session_id"] == b["session_id"]


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/sessions/{sid}/step", b"{not json", 400, "not valid JSON"),
        ("/sessions/{sid}/step", b"[1, 2]", 400, "must be a JSON object"),
        ("/sessions/{sid}/step", b"{}", 400, "missing field 'action'"),
        ("/sessions/{sid}/step", b'{"action": "x", "request_id": 5}', 400, "'request_id' must be str"),
        ("/sessions/{sid}/reset", b'{"seed": "zero"}', 400, "'seed' must be int"),
        ("/sessions/{sid}/reset", b'{"seed": true}', 400, "'seed' must be int"),
        ("/sessions/{sid}/reset", b'{"options": [1]}', 400, "'options' must be dict"),
        ("/sessions/{sid}/reset", b'{"options": {"task_id": "no/such/task"}}', 400, "no task with id"),
        ("/sessions/{sid}/reset", b'{"options": {"task_index": 99999}}', 400, "out of range"),
        ("/sessions/nope/step", b'{"action": "x"}', 404, "unknown session"),
        ("/sessions/{sid}/step", b"\xff\xfe", 400, "not valid JSON"),
        ("/seed_session", b'{"responses_create_params": "x"}', 400, "must be dict"),
        ("/verify", b'{"responses_create_params": {"input": "q"}}', 400, "missing field 'response'"),
    ],
)
def test_malformed_requests_get_a_4xx_and_leave_other_sessions_alone(math_server, path, body, status, says) -> None:
    with httpx.Client(base_url=math_server.url, timeout=30) as client:
        bystander = new_session(client)
        before = client.post(f"/sessions/{bystander}/reset", json={"seed": 3}).json()
        sid = new_session(client)
        reply = client.post(path.format(sid=sid), content=body, headers={"content-type": "application/json"})
        assert reply.status_code == status, reply.text
        assert says in reply.json()["error"]
        # the bystander's episode goes on untouched
        step = client.post(f"/sessions/{bystander}/step", json={"action": "a first thought"}).json()
        assert step["info"]["task_id"] == before["info"]["task_id"] and step["info"]["turn"] == 1
        assert client.get("/health").json()["status"] == "ok"


def test_step_before_reset_is_a_conflict(math_server) -> None:
    with httpx.Client(base_url=math_server.url, timeout=30) as client:
        sid = new_session(client)
        reply = client.post(f"/sessions/{sid}/step", json={"action": "x"})
        assert reply.status_code == 409 and "reset" in reply.json()["error"]


def test_limits_busy_503_session_cap_body_size_and_expiry(limited_server) -> None:
    url = limited_server.url
    with httpx.Client(base_url=url, timeout=30) as client:
        # oversized body: 413 with the limit in the message, declared or streamed (chunked)
        sid = new_session(client)
        client.post(f"/sessions/{sid}/reset", json={"seed": 0})
        big = json.dumps({"action": "x" * 100_000}).encode()
        reply = client.post(f"/sessions/{sid}/step", content=big)
        assert reply.status_code == 413 and "65,536-byte limit" in reply.json()["error"]
        chunked = client.post(f"/sessions/{sid}/step", content=iter([big[:40_000], big[40_000:]]))
        assert chunked.status_code == 413
        # session cap: 3 open sessions, the 4th create is refused with 429
        others = [new_session(client) for _ in range(2)]
        capped = client.post("/sessions")
        assert capped.status_code == 429 and "session limit" in capped.json()["error"]
        # busy: 2 slow verifications fill the 2 call slots; a third call is answered 503 at once, not queued
        for s in [sid, *others]:
            client.post(f"/sessions/{s}/reset", json={"seed": 0})

        def slow(session: str) -> int:
            return httpx.post(f"{url}/sessions/{session}/step", json={"action": SLOW_ANSWER}, timeout=30).status_code

        with ThreadPoolExecutor(2) as pool:
            running = [pool.submit(slow, s) for s in (sid, others[0])]
            deadline = time.monotonic() + 10
            while client.get("/metrics").json()["pending_env_calls"] < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            tick = time.monotonic()
            busy = client.post(f"/sessions/{others[1]}/step", json={"action": "x"})
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
            assert time.monotonic() - tick < 1.0  # answered at once, not queued behind ~3 s of verification
            assert [f.result() for f in running] == [200, 200]
        assert client.get("/metrics").json()["counts"]["rejected_busy"] >= 1
        # a busy-refused step was not run: the same request goes through once there is room
        again = client.post(f"/sessions/{others[1]}/step", json={"action": "x"})
        assert again.status_code == 200 and again.json()["info"]["turn"] == 1
        # expiry: idle sessions are closed after the 5 s ttl and their ids answer 404
        time.sleep(6.5)
        gone = client.post(f"/sessions/{sid}/step", json={"action": "x"})
        assert gone.status_code == 404
        metrics = client.get("/metrics").json()
        assert metrics["sessions"] == 0 and metrics["counts"]["sessions_expired"] >= 3


def test_graceful_shutdown_finishes_the_running_step_and_closes_every_env() -> None:
    server = start_server("nemo/Math-v0", "--env-kwargs", '{"verify_timeout_s": 1.5}')
    try:
        client = httpx.Client(base_url=server.url, timeout=30)
        sids = [new_session(client) for _ in range(3)]
        for sid in sids:
            client.post(f"/sessions/{sid}/reset", json={"seed": 0})
        result: dict[str, object] = {}

        def slow() -> None:
            result["reply"] = httpx.post(
                f"{server.url}/sessions/{sids[0]}/step", json={"action": SLOW_ANSWER}, timeout=30
            )

        worker = threading.Thread(target=slow)
        worker.start()
        deadline = time.monotonic() + 10
        while client.get("/metrics").json()["pending_env_calls"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        code = server.stop(signal.SIGTERM)
        worker.join(30)
        assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
        assert server.proc.stdout is not None
        assert "shut down; closed 3 open session(s)" in server.proc.stdout.read()
        reply = result["reply"]
        assert isinstance(reply, httpx.Response) and reply.status_code == 200  # the running step finished
        assert reply.json()["terminated"] is True
        with pytest.raises(httpx.ConnectError):
            client.get("/health")
    finally:
        server.stop(signal.SIGKILL)


def test_verify_gives_score_rewards_on_nemo_gym_rows(math_server) -> None:
    with httpx.Client(base_url=math_server.url, timeout=60) as client:
        for row in rows("math_with_judge", "example_rollouts.jsonl"):
            reply = client.post("/verify", json=row)
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert body["reward"] == score(row, "math_with_judge", verify_timeout_s=SLOW_CHECK_S)["reward"]
            assert body["reward"] == row["reward"]
            assert body["responses_create_params"] == row["responses_create_params"]
            assert body["mask_sample"] is False


def test_verify_on_code_gen_rows_and_a_nemo_gym_agent_loop_with_tool_routes() -> None:
    joined = join_rollouts(rows("code_gen", "example_rollouts.jsonl"), rows("code_gen", "example.jsonl"))
    with served("nemo/CompCoding-v0") as server, httpx.Client(base_url=server.url, timeout=120) as client:
        for row in joined:
            body = client.post("/verify", json=row).json()
            assert body["reward"] == score(row, "code_gen")["reward"] == row["reward"]
        # What NeMo Gym's simple agent does: seed the session with the task row (cookie), call a tool route
        # with the function call's arguments, then verify the final response in the same session.
        task = rows("code_gen", "example.jsonl")[0]
        seeded = client.post("/seed_session", json=task)
        assert seeded.status_code == 200 and "gym_nemo_session" in seeded.cookies
        tool = client.post("/execute_python", json={"code": "print(sum(range(10)))"})
        assert tool.status_code == 200 and "45" in tool.json()["output"]
        bad = client.post("/execute_python", json={"code": 5})
        assert bad.status_code == 200 and "invalid arguments" in bad.json()["output"]
        text = {"type": "output_text", "text": "no code"}
        answer = {"output": [{"type": "message", "role": "assistant", "content": [text]}]}
        verified = client.post("/verify", json={**task, "response": answer}).json()
        assert verified["reward"] == 0.0 and verified["mask_sample"] is False
        assert client.post("/close_session").json()["closed"] is not None
        client.cookies.clear()
        orphan = client.post("/execute_python", json={"code": "print(1)"})
        assert orphan.status_code == 400 and "/seed_session" in orphan.json()["error"]


def test_verify_on_instruction_following_rows_reads_the_text_nemo_gym_checks() -> None:
    # NeMo Gym's instruction_following server checks output[-1].content[0].text, not the joined message:
    # /verify must use the same extraction as score() does for that server kind.
    with served("nemo/InstructionFollowing-v0") as server, httpx.Client(base_url=server.url, timeout=120) as client:
        for row in rows("instruction_following", "example_rollouts.jsonl"):
            body = client.post("/verify", json=row).json()
            assert body["reward"] == score(row, "instruction_following")["reward"] == row["reward"]


def test_cli_refuses_an_unknown_env_and_bad_kwargs(capsys) -> None:
    from gym_nemo.cli import main

    assert main(["serve", "nemo/NoSuchEnv-v0"]) == 2
    assert "unknown env 'nemo/NoSuchEnv-v0'" in capsys.readouterr().err
    assert main(["serve", "nemo/Math-v0", "--env-kwargs", "{oops"]) == 2
    assert "--env-kwargs is not valid JSON" in capsys.readouterr().err


def test_sessions_share_the_task_pool_where_the_env_accepts_it() -> None:
    from gym_nemo.serve.server import _EnvFactory

    math = _EnvFactory("nemo/Math-v0", {"task_ids": ["rg/gcd/0", "rg/gcd/1"]})
    env = math.make()
    assert env.unwrapped.tasks is math.probe.unwrapped.tasks and len(env.unwrapped.tasks) == 2
    # ReasoningGym with generator config refuses data= (config needs data=None): each env builds its own pool
    generated = _EnvFactory("nemo/ReasoningGym-v0", {"dataset": "gcd", "size": 3, "max_value": 50})
    other = generated.make()
    assert other.unwrapped.tasks is not generated.probe.unwrapped.tasks
    assert [t.task_id for t in other.unwrapped.tasks] == [t.task_id for t in generated.probe.unwrapped.tasks]
    for e in (env, math.probe, other, generated.probe):
        e.close()
