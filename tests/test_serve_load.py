"""Load on one ``gym-nemo serve`` process (loopback, bounded): 2,000 sessions of nemo/Math-v0 open at once,
each playing an episode, with 503s retried; none is lost. Speed is measured by bench/bench_serve.py."""

from __future__ import annotations

import asyncio

import pytest

aiohttp = pytest.importorskip("aiohttp", reason="the load client needs aiohttp (serve extra)")

from tests.serving import served  # noqa: E402

SESSIONS = 2000


async def _load(url: str) -> dict:
    gate = asyncio.Semaphore(64)
    counts = {"requests": 0, "busy": 0}
    async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=120)) as http:

        async def call(method: str, path: str, body: dict | None = None) -> dict:
            for _ in range(100):  # bounded: a 503 says "busy, retry"; anything else non-200 fails the test
                async with gate, http.request(method, path, json=body) as response:
                    counts["requests"] += 1
                    reply = await response.json()
                    if response.status != 503:
                        assert response.status == 200, (path, response.status, reply)
                        return reply
                counts["busy"] += 1
                await asyncio.sleep(0.2)
            raise AssertionError(f"{path}: still busy after 100 tries")

        ids = [r["session_id"] for r in await asyncio.gather(*(call("POST", "/sessions", {}) for _ in range(SESSIONS)))]
        async with http.get("/metrics") as response:
            open_at_once = (await response.json())["sessions"]
        resets = await asyncio.gather(
            *(call("POST", f"/sessions/{sid}/reset", {"seed": i}) for i, sid in enumerate(ids))
        )
        steps = await asyncio.gather(
            *(call("POST", f"/sessions/{sid}/step", {"action": f"\\boxed{{{i}}}"}) for i, sid in enumerate(ids))
        )
        await asyncio.gather(*(call("DELETE", f"/sessions/{sid}") for sid in ids))
        async with http.get("/metrics") as response:
            metrics = await response.json()
    return {"ids": ids, "open": open_at_once, "resets": resets, "steps": steps, "metrics": metrics, **counts}


def test_two_thousand_concurrent_sessions_none_lost() -> None:
    with served("nemo/Math-v0", "--max-pending", "128") as server:
        result = asyncio.run(asyncio.wait_for(_load(server.url), timeout=150))
    assert len(set(result["ids"])) == SESSIONS and result["open"] == SESSIONS
    # every session played its own episode to the verifier: seeded task, its own boxed answer, a verdict
    for i, (reset, step) in enumerate(zip(result["resets"], result["steps"], strict=True)):
        assert step["terminated"] and step["info"]["task_id"] == reset["info"]["task_id"]
        assert step["info"]["verdict"]["details"]["boxed_answer"] == str(i)
        assert [m["role"] for m in step["info"]["messages"]].count("assistant") == 1
    counts = result["metrics"]["counts"]
    assert counts["sessions_created"] == counts["sessions_closed"] == SESSIONS
    assert counts["steps"] == SESSIONS and result["metrics"]["sessions"] == 0
    assert counts.get("http_500", 0) == 0 and counts.get("http_404", 0) == 0
