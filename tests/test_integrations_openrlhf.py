"""The OpenRLHF adapter driven by OpenRLHF's own MultiTurnAgentExecutor (agent.py from the 0.11.2 wheel)."""

import asyncio
import importlib.util
import json
from pathlib import Path

import gymnasium as gym
import pytest

from gym_nemo.testing.openrlhf_harness import HFEngine, VLLMSamplingParams, load_openrlhf_agent, openrlhf_wheel

pytest.importorskip("transformers")
try:
    agent = load_openrlhf_agent()
except FileNotFoundError as exc:
    pytest.skip(f"{exc} (the OpenRLHF wheel could not be downloaded)", allow_module_level=True)

from gym_nemo.integrations.openrlhf import AgentExecutor, NemoAgentExecutor, write_prompts

ADAPTER = Path(__file__).resolve().parents[1] / "gym_nemo" / "integrations" / "openrlhf.py"


def _load_like_openrlhf(path: Path):
    """What OpenRLHF's vllm_engine._load_agent_executor does with --train.agent_func_path."""
    spec = importlib.util.spec_from_file_location("agent_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert issubclass(module.AgentExecutor, agent.AgentExecutorBase)
    return module.AgentExecutor()


def test_agent_py_comes_from_the_wheel() -> None:
    assert openrlhf_wheel() is not None or "site-packages" in agent.__file__
    assert issubclass(NemoAgentExecutor, agent.MultiTurnAgentExecutor)


def test_agent_func_path_loads_with_the_env_from_the_environment(monkeypatch) -> None:
    monkeypatch.delenv("GYM_NEMO_ENV", raising=False)
    with pytest.raises(ValueError, match="GYM_NEMO_ENV"):
        _load_like_openrlhf(ADAPTER)
    monkeypatch.setenv("GYM_NEMO_ENV", "nemo/TargetChar-v0")
    monkeypatch.setenv("GYM_NEMO_ENV_KWARGS", json.dumps({"max_attempts": 2}))
    executor = _load_like_openrlhf(ADAPTER)
    assert executor.env_id == "nemo/TargetChar-v0" and executor.env_kwargs == {"max_attempts": 2}
    assert AgentExecutor is NemoAgentExecutor


def test_multi_turn_episodes_with_a_real_generate_are_token_exact(policy, tmp_path) -> None:
    tokenizer = policy.tokenizer
    executor = NemoAgentExecutor("nemo/TargetChar-v0", {"max_attempts": 2})
    rows = tmp_path / "prompts.jsonl"
    assert write_prompts("nemo/TargetChar-v0", rows) == 5
    row = json.loads(rows.read_text().splitlines()[0])
    eot = tokenizer.convert_tokens_to_ids("<|im_end|>")

    engine = HFEngine(policy)
    params = VLLMSamplingParams(temperature=1.0, max_tokens=None, logprobs=1)
    result = asyncio.run(executor.execute(row["prompt"], row["label"], params, 160, tokenizer, engine))

    env = executor._idle[-1]  # the episode's env went back to the pool
    messages = env.unwrapped.messages
    done = env.unwrapped._done  # a random model may use up OpenRLHF's context budget before the episode ends
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=not done, tokenize=False)
    stream = result["observation_tokens"]
    assert tokenizer.decode(stream, skip_special_tokens=False) == rendered
    assert stream == env.get_wrapper_attr("_ids")  # exactly TokenEnv's ids, not a re-tokenization
    turns = len(result["action_ranges"])
    assert 1 <= turns <= 2 and len(engine.calls) == turns
    assert result["extra_logs"]["turns"] == turns
    for (start, end), (prompt_ids, call_params) in zip(result["action_ranges"], engine.calls, strict=True):
        assert stream[:start] == prompt_ids
        assert eot in call_params.stop_token_ids  # stop tokens set: OpenRLHF gives each turn the whole budget
        assert call_params.max_tokens == 160 - start
        assert all(lp < 0 for lp in result["rollout_log_probs"][start:end])
    assert result["reward"] == pytest.approx(env.unwrapped._return)
    assert params.stop_token_ids == []  # the caller's params are not modified


class _ScriptedPolicy:
    """A TokenPolicy that calls the tool first, then answers (ids from the tokenizer, end-of-turn appended)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.turn = 0

    def generate_ids(self, text):
        return [*self.tokenizer.encode(text, add_special_tokens=False), self.tokenizer.eos_token_id]

    def generate(self, prompts, sampling):  # the TokenPolicy protocol, for HFEngine
        from gym_nemo.policies.token import Generation

        call = {"name": "execute_python", "arguments": {"code": "print(6 * 7)"}}
        text = f"<tool_call>\n{json.dumps(call)}\n</tool_call>" if self.turn == 0 else "def f(): pass"
        self.turn += 1
        ids = self.generate_ids(text)
        return [Generation(ids, [-0.5] * len(ids), "stop", text)]


def test_tool_calls_reach_the_sandbox_and_the_stream_stays_exact(tiny_model_dir) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    scripted = _ScriptedPolicy(tokenizer)
    executor = NemoAgentExecutor("nemo/CodeExec-v0", {"timeout_s": 5})
    probe = gym.make("nemo/CodeExec-v0", timeout_s=5)
    _, info = probe.reset(options={"task_index": 0})
    probe.close()
    params = VLLMSamplingParams(max_tokens=None, logprobs=1)
    result = asyncio.run(
        executor.execute(info["messages"], info["task_id"], params, 4000, tokenizer, HFEngine(scripted))
    )
    env = executor._idle[-1]
    stream = tokenizer.decode(result["observation_tokens"], skip_special_tokens=False)
    assert "<tool_response>\nexit code 0\nstdout:\n42\n" in stream
    rendered = tokenizer.apply_chat_template(env.unwrapped.messages, tools=env.unwrapped.tools, tokenize=False)
    assert rendered.startswith(stream)
    assert len(result["action_ranges"]) == 2 and result["reward"] == 0.0 and result["extra_logs"]["infra_error"] == 0
    executor._idle[-1].close()
