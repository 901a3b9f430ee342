"""The capturing gateway's cost against calling the same policy directly, and 256 concurrent agent runs.

    python bench/bench_gateway.py [--calls 400] [--runs 256] [--calls-per-run 4] [--hf-calls 30] [--max-tokens 32]

Four measurements, each against its baseline in the same run:

1. **Scripted upstream, sequential calls.** A scripted OpenAI-compatible server (aiohttp, its own process:
   a canned vLLM-style reply with ``prompt_token_ids``, ``token_ids`` and logprobs) is called directly and
   through the gateway (``UpstreamBackend``, its own process), alternating in rounds; prints p50/p90 of each
   and the added ms at p50 (target: <= 2 ms).
2. **The scripted chat policy in-process.** Rendering + ``ScriptedChatPolicy.generate`` directly, against the
   same policy behind the gateway (``PolicyBackend``) over HTTP: the gateway's fixed cost per call for an
   in-process policy (HTTP, JSON, the hand-off to the policy thread and back).
3. **The tiny HF model.** ``HFPolicy.generate`` on the rendered prompt in-process (direct), against the
   same policy behind the gateway (``PolicyBackend``) over HTTP, in alternating blocks (a block's first call
   is not counted: here a main-thread ``generate`` slows whatever runs right after it). Prints p50 of each
   and the gateway's share of a call: per call, the client's time less the ``generate`` time measured
   inside the gateway (rendering, HTTP, JSON, thread hand-offs), over the client's time (target: < 5%);
   ``generate``'s own time varies by more than the gateway's cost on a loaded 2-core machine. Also prints the
   rendering and tokenizing inside that time (the tokenizer's ``apply_chat_template`` and ``encode``, timed
   in both paths; the direct path does them too) and the share left without them.
4. **256 concurrent agent runs, scripted upstream.** ``--runs`` agents (asyncio + aiohttp, one process),
   each making ``--calls-per-run`` chat calls whose history grows, on its own run URL; then every run's
   captured calls are fetched: a call missing, or captured without ids, counts as lost. Prints calls/s
   through the gateway and directly against the upstream, and their ratio. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

UPSTREAM = r"""
import json, sys
from aiohttp import web

REPLY = {
    "id": "x", "object": "chat.completion", "created": 0, "model": "scripted",
    "choices": [{"index": 0, "finish_reason": "stop", "token_ids": list(range(100, 116)),
                 "message": {"role": "assistant", "content": "scripted reply"},
                 "logprobs": {"content": [{"token": "t", "logprob": -0.5, "bytes": [116], "top_logprobs": []}] * 16}}],
    "usage": {"prompt_tokens": 0, "completion_tokens": 16, "total_tokens": 16},
}

async def chat(request):
    body = await request.json()
    n = sum(len(str(m.get("content") or "")) // 4 + 4 for m in body["messages"])
    return web.json_response(dict(REPLY, prompt_token_ids=list(range(n))))

app = web.Application(client_max_size=64 * 1024 * 1024)
app.router.add_post("/v1/chat/completions", chat)
runner = web.AppRunner(app, access_log=None)
import asyncio
loop = asyncio.new_event_loop()
loop.run_until_complete(runner.setup())
site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
loop.run_until_complete(site.start())
print(f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1", flush=True)
loop.run_forever()
"""

GATEWAY = r"""
import sys, time
from gym_nemo.agents import Gateway, UpstreamBackend
gw = Gateway(UpstreamBackend(sys.argv[1], "scripted")).start()
for i in range(int(sys.argv[2])):
    gw.open_run(f"r{i}")
gw.open_run("seq")
print(gw.url, flush=True)
while True:
    time.sleep(1)
"""


def _spawn(code: str, *args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("http"):
        proc.kill()
        raise RuntimeError(f"a helper process did not start: {line!r}")
    return proc, line


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) >= 2 else values[0]


def sequential(upstream: str, gateway: str, calls: int) -> dict[str, Any]:
    import httpx

    body = {"model": "scripted", "messages": [{"role": "user", "content": "What is 6 * 7?"}], "max_tokens": 16}
    direct, through = [], []
    with httpx.Client(timeout=30) as client:
        for _ in range(20):  # warm-up: connections, imports
            client.post(f"{upstream}/chat/completions", json=body)
            client.post(f"{gateway}/runs/seq/v1/chat/completions", json=body)
        pairs = [(f"{upstream}/chat/completions", direct), (f"{gateway}/runs/seq/v1/chat/completions", through)]
        for i in range(calls):  # alternate, so the machine's load hits both alike
            for url, out in pairs if i % 2 else pairs[::-1]:
                t = time.perf_counter()
                reply = client.post(url, json=body)
                out.append((time.perf_counter() - t) * 1000)
                assert reply.status_code == 200, reply.text
    return {
        "direct_p50_ms": statistics.median(direct), "direct_p90_ms": _pct(direct, 90),
        "gateway_p50_ms": statistics.median(through), "gateway_p90_ms": _pct(through, 90),
        "added_p50_ms": statistics.median(through) - statistics.median(direct),
    }  # fmt: skip


def in_process(calls: int) -> dict[str, Any]:
    """The scripted chat policy in-process: render + generate directly, against the same via PolicyBackend."""
    import httpx

    from gym_nemo.agents import Gateway, PolicyBackend
    from gym_nemo.agents.workflows import CALCULATOR_TOOL
    from gym_nemo.policies.token import SamplingParams
    from gym_nemo.testing.scripted_policy import ScriptedChatPolicy
    from gym_nemo.testing.tiny_model import build_tokenizer

    policy = ScriptedChatPolicy(build_tokenizer("chatml"))
    messages = [{"role": "user", "content": "What is 6 * 7?"}]
    direct, through = [], []
    with Gateway(PolicyBackend(policy)) as gw, httpx.Client(timeout=30) as client:
        run = gw.open_run()
        body = {"messages": messages, "tools": [CALCULATOR_TOOL]}
        for i in range(calls + 20):
            t = time.perf_counter()
            text = policy.tokenizer.apply_chat_template(
                messages, tools=[CALCULATOR_TOOL], add_generation_prompt=True, tokenize=False
            )
            policy.generate([policy.tokenizer.encode(text, add_special_tokens=False)], SamplingParams())
            d = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            assert client.post(f"{run.base_url}/chat/completions", json=body).status_code == 200
            if i >= 20:
                direct.append(d)
                through.append((time.perf_counter() - t) * 1000)
    return {
        "inproc_direct_p50_ms": statistics.median(direct), "inproc_gateway_p50_ms": statistics.median(through),
        "inproc_added_p50_ms": statistics.median(through) - statistics.median(direct),
    }  # fmt: skip


def hf_overhead(calls: int, max_tokens: int) -> dict[str, Any]:
    import tempfile

    import httpx
    import torch

    torch.set_num_threads(1)
    from gym_nemo.agents import Gateway, PolicyBackend
    from gym_nemo.policies.hf import HFPolicy
    from gym_nemo.policies.token import SamplingParams
    from gym_nemo.testing.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        policy = HFPolicy(build_tiny_model(tmp, "chatml"))
    generate, inside, rendering = policy.generate, [], []

    def timed_generate(prompts: Any, sampling: Any) -> Any:  # the model's own time, inside the gateway
        t = time.perf_counter()
        out = generate(prompts, sampling)
        inside.append((time.perf_counter() - t) * 1000)
        return out

    def timed(method: Any) -> Any:  # the tokenizer's rendering and encoding, which the direct path does too
        def call(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            out = method(*args, **kwargs)
            rendering.append((time.perf_counter() - t) * 1000)
            return out

        return call

    tokenizer = policy.tokenizer
    tokenizer.apply_chat_template, tokenizer.encode = timed(tokenizer.apply_chat_template), timed(tokenizer.encode)

    messages = [{"role": "user", "content": "What is 6 * 7? Explain."}]
    sampling = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    direct, through, kept, rendered = [], [], [], []
    with Gateway(PolicyBackend(policy, max_tokens=max_tokens)) as gw, httpx.Client(timeout=60) as client:
        policy.generate = timed_generate  # type: ignore[method-assign]
        run = gw.open_run()
        body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0.0}
        block = max(calls // 3, 2)
        for _ in range(3):  # blocks of each, alternating: a main-thread generate slows the next few calls of any kind
            for i in range(block + 1):
                t = time.perf_counter()
                text = policy.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
                generate([policy.tokenizer.encode(text, add_special_tokens=False)], sampling)
                if i:
                    direct.append((time.perf_counter() - t) * 1000)
            for i in range(block + 1):
                rendering.clear()
                t = time.perf_counter()
                assert client.post(f"{run.base_url}/chat/completions", json=body).status_code == 200
                if i:
                    through.append((time.perf_counter() - t) * 1000)
                    kept.append(inside[-1])
                    rendered.append(sum(rendering))
    added = [g - m for g, m in zip(through, kept, strict=True)]  # all but the model: HTTP, render, JSON
    beyond = [a - r for a, r in zip(added, rendered, strict=True)]  # all but what the direct path does too
    p50d, p50g = statistics.median(direct), statistics.median(through)
    return {
        "hf_direct_p50_ms": p50d, "hf_gateway_p50_ms": p50g, "hf_added_p50_ms": statistics.median(added),
        "hf_overhead_share": statistics.median(a / g for a, g in zip(added, through, strict=True)),
        "hf_render_p50_ms": statistics.median(rendered),
        "hf_beyond_direct_share": statistics.median(b / g for b, g in zip(beyond, through, strict=True)),
    }  # fmt: skip


async def _agents(base: str, runs: int, calls_per_run: int, per_run_url: bool) -> tuple[float, int]:
    import aiohttp

    async def agent(session: aiohttp.ClientSession, i: int) -> int:
        url = f"{base}/runs/r{i}/v1/chat/completions" if per_run_url else f"{base}/chat/completions"
        messages: list[dict[str, Any]] = [{"role": "user", "content": f"task {i}"}]
        done = 0
        for turn in range(calls_per_run):
            async with session.post(url, json={"model": "scripted", "messages": messages}) as reply:
                answer = await reply.json()
                if reply.status != 200:
                    raise RuntimeError(f"run {i}: {answer}")
            messages += [answer["choices"][0]["message"], {"role": "user", "content": f"next {turn}"}]
            done += 1
        return done

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:
        t = time.perf_counter()
        done = await asyncio.gather(*(agent(session, i) for i in range(runs)))
        return time.perf_counter() - t, sum(done)


def concurrent(upstream: str, gateway: str, runs: int, calls_per_run: int) -> dict[str, Any]:
    import httpx

    direct_s, direct_calls = asyncio.run(_agents(upstream, runs, calls_per_run, per_run_url=False))
    through_s, through_calls = asyncio.run(_agents(gateway, runs, calls_per_run, per_run_url=True))
    lost = 0
    for i in range(runs):
        calls = httpx.get(f"{gateway}/runs/r{i}/calls", timeout=30).json()["calls"]
        lost += calls_per_run - len(calls)
        lost += sum(c["prompt_ids"] is None or c["completion_ids"] is None for c in calls)
    return {
        "runs": runs, "calls": through_calls, "lost_calls": lost,
        "direct_calls_per_s": direct_calls / direct_s, "gateway_calls_per_s": through_calls / through_s,
        "throughput_ratio": (through_calls / through_s) / (direct_calls / direct_s),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--runs", type=int, default=256)
    parser.add_argument("--calls-per-run", type=int, default=4)
    parser.add_argument("--hf-calls", type=int, default=30)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    machine = f"{platform.platform()}, {os.cpu_count()} cores, python {platform.python_version()}"
    print(f"machine: {machine}, load average {os.getloadavg()[0]:.1f}")
    upstream_proc, upstream = _spawn(UPSTREAM)
    gateway_proc, gateway = _spawn(GATEWAY, upstream, str(args.runs))
    try:
        seq = sequential(upstream, gateway, args.calls)
        print(f"scripted upstream, {args.calls} sequential calls each")
        print(f"  direct   p50 {seq['direct_p50_ms']:.2f} ms  p90 {seq['direct_p90_ms']:.2f} ms")
        print(f"  gateway  p50 {seq['gateway_p50_ms']:.2f} ms  p90 {seq['gateway_p90_ms']:.2f} ms")
        print(f"  added at p50: {seq['added_p50_ms']:.2f} ms (target <= 2 ms)")
        conc = concurrent(upstream, gateway, args.runs, args.calls_per_run)
        print(f"{args.runs} concurrent agent runs x {args.calls_per_run} calls, scripted upstream")
        print(f"  direct   {conc['direct_calls_per_s']:.0f} calls/s")
        print(f"  gateway  {conc['gateway_calls_per_s']:.0f} calls/s  (x{conc['throughput_ratio']:.2f} direct)")
        print(f"  lost calls: {conc['lost_calls']} of {conc['calls']}")
    finally:
        for proc in (gateway_proc, upstream_proc):
            proc.kill()
            proc.wait(10)
    inproc = in_process(args.calls)
    print(f"scripted chat policy in-process (PolicyBackend), {args.calls} calls each")
    print(f"  direct (render + generate)  p50 {inproc['inproc_direct_p50_ms']:.2f} ms")
    print(f"  gateway over HTTP           p50 {inproc['inproc_gateway_p50_ms']:.2f} ms")
    print(f"  added at p50: {inproc['inproc_added_p50_ms']:.2f} ms")
    hf = hf_overhead(args.hf_calls, args.max_tokens)
    print(f"tiny HF model, {args.max_tokens} new tokens, {args.hf_calls} calls each")
    print(f"  direct (render + generate)  p50 {hf['hf_direct_p50_ms']:.1f} ms")
    print(f"  gateway over HTTP           p50 {hf['hf_gateway_p50_ms']:.1f} ms")
    print(f"  gateway's own time per call (client time - generate time inside it): p50 {hf['hf_added_p50_ms']:.1f} ms")
    print(f"  gateway share of a call: {100 * hf['hf_overhead_share']:.1f}% (target < 5%)")
    print(f"  of which rendering + tokenizing (the direct path does it too): p50 {hf['hf_render_p50_ms']:.2f} ms")
    print(f"  share of a call without it (HTTP, JSON, hand-offs, capture): {100 * hf['hf_beyond_direct_share']:.1f}%")
    print(json.dumps({**seq, **conc, **inproc, **hf}))


if __name__ == "__main__":
    main()
