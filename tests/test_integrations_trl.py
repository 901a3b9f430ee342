"""TRL adapters against the real TRL 1.16 GRPOTrainer (CPU, the tiny model)."""

import json
import os

import pytest

pytest.importorskip("trl", reason="the [trl] extra is not installed")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import gymnasium as gym
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import get_json_schema
from trl import GRPOConfig, GRPOTrainer

from gym_nemo.integrations.trl import (
    EnvRollout,
    env_reward,
    environment_factory,
    environment_reward,
    task_dataset,
)
from gym_nemo.policies.token import Generation


def _config(tmp_path, **overrides) -> GRPOConfig:
    settings = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_generations=2,
        max_steps=2,
        max_completion_length=8,
        learning_rate=1e-3,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    settings.update(overrides)
    return GRPOConfig(**settings)


def test_rollout_func_trains_a_real_grpo_trainer_on_multi_turn_episodes(tiny_model_dir, tmp_path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = [p.detach().clone() for p in model.parameters()]
    rollout = EnvRollout("nemo/TargetChar-v0", env_kwargs={"max_attempts": 2})  # a wrong answer gets a 2nd turn
    outputs = []

    def recording_rollout(prompts, trainer):
        out = rollout(prompts, trainer)
        outputs.append((prompts, out))
        return out

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[env_reward],
        args=_config(tmp_path),
        train_dataset=rollout.dataset(),
        processing_class=tokenizer,
        rollout_func=recording_rollout,
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "rewards/env_reward/mean" in h]
    assert len(logs) == 2 and len(outputs) == 2

    for (prompts, out), log in zip(outputs, logs, strict=True):
        assert len(out["prompt_ids"]) == len(prompts) == 4
        assert prompts[0] == prompts[1] and prompts[2] == prompts[3]  # TRL repeats each prompt num_generations times
        rewards = out["env_reward"]
        assert log["rewards/env_reward/mean"] == pytest.approx(sum(rewards) / len(rewards), abs=1e-6)
        assert log["env/turns_mean"] == pytest.approx(sum(out["env_turns"]) / 4)
        assert log["completions/mean_length"] == pytest.approx(sum(sum(m) for m in out["env_mask"]) / 4)
        for prompt_ids, ids, mask, logprobs, turns in zip(
            out["prompt_ids"], out["completion_ids"], out["env_mask"], out["logprobs"], out["env_turns"], strict=True
        ):
            assert len(ids) == len(mask) == len(logprobs)
            assert mask[-1] == 1  # trailing env tokens are left out
            # one run of policy tokens per turn, separated by the env's feedback (mask 0)
            runs = sum(1 for i, m in enumerate(mask) if m == 1 and (i == 0 or mask[i - 1] == 0))
            assert runs == turns
            assert all(lp == 0.0 for lp, m in zip(logprobs, mask, strict=True) if m == 0)
            assert all(lp < 0.0 for lp, m in zip(logprobs, mask, strict=True) if m == 1)
            text = tokenizer.decode(prompt_ids + ids, skip_special_tokens=False)
            if turns == 2:
                env_ids = [t for t, m in zip(ids, mask, strict=True) if m == 0]
                assert "Your answer was checked" in tokenizer.decode(env_ids)
            assert text.startswith(tokenizer.decode(prompt_ids, skip_special_tokens=False))
    # the sampling logprobs are the trainer model's own: TRL trained on them and moved the weights
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    rollout.close()


class _ScriptedToolPolicy:
    """First turn: a tool call; second: an answer. Token ids come from the tokenizer (logprobs are not real)."""

    name = "scripted"

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.turn = 0

    def generate(self, prompts, sampling):
        call = {"name": "execute_python", "arguments": {"code": "print(6 * 7)"}}
        text = f"<tool_call>\n{json.dumps(call)}\n</tool_call>" if self.turn == 0 else "def f(): pass"
        self.turn += 1
        ids = [*self.tokenizer.encode(text, add_special_tokens=False), self.tokenizer.eos_token_id]
        return [Generation(ids, [-1.0] * len(ids), "stop", text) for _ in prompts]


def test_rollout_func_runs_tools_token_exactly(tiny_model_dir) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rollout = EnvRollout("nemo/CodeExec-v0", env_kwargs={"timeout_s": 5}, policy=_ScriptedToolPolicy(tokenizer))
    data = rollout.dataset(num_rows=1)

    class _Trainer:  # only the tokenizer is read when a policy is given
        processing_class = tokenizer

    out = rollout([data[0]["prompt"]], _Trainer())
    ids, mask = out["completion_ids"][0], out["env_mask"][0]
    assert out["env_turns"] == [2] and out["env_reward"] == [0.0] and out["env_infra_error"] == [None]
    env_text = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m == 0])
    assert "<tool_response>" in env_text and "42" in env_text
    # the episode's ids are the chat template applied to the episode's messages (no re-tokenization drift)
    env = gym.make("nemo/CodeExec-v0", timeout_s=5)
    env.reset(options={"task_id": data[0]["task_id"]})
    call = {"name": "execute_python", "arguments": {"code": "print(6 * 7)"}}
    env.step(f"<tool_call>\n{json.dumps(call)}\n</tool_call>")
    *_, info = env.step("def f(): pass")
    tools = env.unwrapped.tools
    env.close()
    rendered = tokenizer.apply_chat_template(info["messages"], tools=tools, tokenize=False)
    assert rendered.startswith(tokenizer.decode(out["prompt_ids"][0] + ids, skip_special_tokens=False))
    rollout.close()


def test_rollout_func_rejects_prompts_that_name_no_task(tiny_model_dir) -> None:
    rollout = EnvRollout("nemo/TargetChar-v0")

    class _Trainer:
        processing_class = AutoTokenizer.from_pretrained(tiny_model_dir)

    with pytest.raises(ValueError, match="not the prompt of any nemo/TargetChar-v0 task"):
        rollout([[{"role": "user", "content": "hello"}]], _Trainer())


def test_environment_factory_exposes_the_env_tools_to_trl() -> None:
    factory = environment_factory("nemo/CodeExec-v0", timeout_s=5)
    env = factory()
    schema = get_json_schema(env.execute_python)  # what TRL renders into the prompt
    assert schema["function"]["name"] == "execute_python"
    assert schema["function"]["parameters"]["required"] == ["code"]
    row = task_dataset("nemo/CodeExec-v0", num_rows=1)[0]
    assert env.reset(**row) is None
    assert "42" in env.execute_python(code="print(6 * 7)")
    reference = env._env.unwrapped.task.reference
    rewards = environment_reward([[{"role": "assistant", "content": reference}]], environments=[env])
    assert rewards == [1.0]
    env.reset(**row)
    assert environment_reward(["def nothing(): pass"], environments=[env]) == [0.0]
    env._env.close()


def test_environment_factory_in_a_real_grpo_trainer(tiny_model_dir, tmp_path) -> None:
    from trl.chat_template_utils import qwen3_template

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    # TRL parses tool calls only for chat templates it knows; the tiny template writes Qwen's <tool_call> blocks.
    tokenizer.response_template = qwen3_template
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[environment_reward],
        args=_config(tmp_path, max_steps=1),
        train_dataset=task_dataset("nemo/CodeExec-v0", num_rows=4, env_kwargs={"timeout_s": 5}),
        processing_class=tokenizer,
        environment_factory=environment_factory("nemo/CodeExec-v0", timeout_s=5),
    )
    assert [t.__name__ for t in trainer.tools] == ["execute_python"]
    trainer.train()
    log = next(h for h in trainer.state.log_history if "rewards/environment_reward/mean" in h)
    assert log["rewards/environment_reward/mean"] == 0.0  # random text fails HumanEval's tests
    assert all(env.reward == 0.0 and env._done for env in trainer.environments)
