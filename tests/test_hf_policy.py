"""HFPolicy: logprobs equal teacher-forced logprobs of the same ids (fp32, 1e-4); stops, lengths, seeds."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from gym_nemo.policies import Generation, HFPolicy, SamplingParams, TokenPolicy  # noqa: E402


def _prompts(tok) -> list[list[int]]:
    chats = [
        [{"role": "user", "content": "Write a function that adds two numbers."}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Grüße 🙂 六乘以七?"}],
        [{"role": "user", "content": "x"}],
    ]
    return [tok.encode(tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False)) for c in chats]


def teacher_forced(model, prompt: list[int], completion: list[int]) -> list[float]:
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    logprobs = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
    return logprobs.gather(-1, torch.tensor(completion).unsqueeze(-1)).squeeze(-1).tolist()


@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_logprobs_match_teacher_forcing(policy: HFPolicy, temperature: float) -> None:
    assert isinstance(policy, TokenPolicy)
    prompts = _prompts(policy.tokenizer)  # different lengths: left padding in one batch
    sampling = SamplingParams(max_tokens=24, temperature=temperature, top_k=50 if temperature == 0.7 else 0, seed=3)
    generations = policy.generate(prompts, sampling)
    assert len(generations) == len(prompts)
    for prompt, gen in zip(prompts, generations, strict=True):
        assert isinstance(gen, Generation) and gen.prompt_ids == prompt
        assert len(gen.token_ids) == len(gen.logprobs) > 0
        expected = teacher_forced(policy.model, prompt, gen.token_ids)
        assert max(abs(a - b) for a, b in zip(gen.logprobs, expected, strict=True)) < 1e-4
        assert gen.text == policy.tokenizer.decode(gen.token_ids[:-1] if gen.finish_reason == "stop" else gen.token_ids)


def test_greedy_takes_the_argmax_and_seeds_reproduce(policy: HFPolicy) -> None:
    prompts = _prompts(policy.tokenizer)
    greedy = policy.generate(prompts, SamplingParams(max_tokens=8, temperature=0.0))
    for prompt, gen in zip(prompts, greedy, strict=True):
        ids = list(prompt)
        for token in gen.token_ids:
            with torch.no_grad():
                assert int(policy.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()) == token
            ids.append(token)
    a = policy.generate(prompts, SamplingParams(max_tokens=16, seed=11))
    b = policy.generate(prompts, SamplingParams(max_tokens=16, seed=11))
    c = policy.generate(prompts, SamplingParams(max_tokens=16, seed=12))
    assert [g.token_ids for g in a] == [g.token_ids for g in b] != [g.token_ids for g in c]


def test_finish_reasons(policy: HFPolicy) -> None:
    prompt = _prompts(policy.tokenizer)[0]
    (free,) = policy.generate([prompt], SamplingParams(max_tokens=10, temperature=0.0))
    assert free.finish_reason == "length" and len(free.token_ids) == 10
    stop = free.token_ids[3]
    first = free.token_ids.index(stop)
    (stopped,) = policy.generate([prompt], SamplingParams(max_tokens=10, temperature=0.0, stop_token_ids=(stop,)))
    assert stopped.finish_reason == "stop" and stopped.token_ids == free.token_ids[: first + 1]
    assert stopped.logprobs == pytest.approx(free.logprobs[: first + 1], abs=1e-5)
    with pytest.raises(ValueError):
        policy.generate([[]], SamplingParams())
    with pytest.raises(ValueError):
        SamplingParams(max_tokens=0)


def test_top_k_zero_samples_the_whole_vocabulary(policy: HFPolicy) -> None:
    prompt = _prompts(policy.tokenizer)[2]
    with torch.no_grad():
        logits = policy.model(input_ids=torch.tensor([prompt])).logits[0, -1]
    top50 = set(logits.topk(50).indices.tolist())
    first = {
        k: {g.token_ids[0] for g in policy.generate([prompt] * 64, SamplingParams(max_tokens=1, top_k=k, seed=5))}
        for k in (0, 50, 1)
    }
    assert first[50] <= top50 and not first[0] <= top50  # a random model is near uniform over 2k ids
    assert first[1] == {int(logits.argmax())}


def test_checkpoint_generation_config_does_not_leak_into_sampling(tiny_model_dir) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompt = _prompts(HFPolicy(model, tiny_model_dir).tokenizer)[2]
    with torch.no_grad():
        best = int(model(input_ids=torch.tensor([prompt])).logits[0, -1].argmax())
    # as if the checkpoint shipped its own sampling defaults, one of them banning the argmax token
    model.generation_config.suppress_tokens = [best]
    model.generation_config.repetition_penalty = 50.0
    policy = HFPolicy(model, tiny_model_dir)
    (gen,) = policy.generate([prompt], SamplingParams(max_tokens=1, temperature=0.0))
    assert gen.token_ids == [best]
