"""``HFPolicy``: the token-level protocol on transformers ``generate`` (CPU or GPU), with exact logprobs.

Logprobs come from ``generate(output_logits=True)``: the raw logits of each step, log-softmaxed in fp32,
gathered at the chosen ids. (``output_scores`` would give the processed scores, after temperature and
top-k/top-p, which differ from the model's distribution by up to several nats.) With an fp32 model they
equal teacher-forced logprobs of the same ids to ~1e-6. Prompts of different lengths are left-padded
into one batch; ``max_batch_size`` splits larger batches.

Weight sync: ``update_weights(state_dict_or_path, version)`` copies new weights into the model in place,
between two ``generate`` calls (a call in progress finishes with the weights it started with); every
``Generation`` carries the ``policy_version`` that produced it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from gym_nemo.policies.token import Generation, SamplingParams
from gym_nemo.policies.weights import ParamSpec, WeightsSource, check_version, load_weights, shapes_of


class HFPolicy:
    """A transformers causal LM behind the :class:`~gym_nemo.policies.token.TokenPolicy` protocol.

    Args:
        model: a model path/hub id (loaded offline-friendly with ``from_pretrained``) or a loaded model.
        tokenizer: defaults to the one saved with ``model`` (a path is loaded with ``AutoTokenizer``).
        device: ``"cpu"``, ``"cuda"``, ...
        dtype: model dtype when loading from a path (fp32 by default, for exact logprobs).
        max_batch_size: prompts per ``generate`` call.

    The model's ``generation_config`` is replaced by one that holds only its bos/eos/pad ids, so
    :class:`~gym_nemo.policies.token.SamplingParams` are the only sampling settings in force.
    """

    def __init__(
        self,
        model: str | Path | Any,
        tokenizer: Any | None = None,
        *,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        max_batch_size: int = 64,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        if isinstance(model, (str, Path)):
            self.name = f"hf:{Path(model).name if Path(model).exists() else model}"
            tokenizer = tokenizer if tokenizer is not None else str(model)
            model = AutoModelForCausalLM.from_pretrained(str(model), dtype=dtype)
        else:
            self.name = f"hf:{getattr(model, 'name_or_path', type(model).__name__)}"
        if tokenizer is None:
            raise ValueError("pass tokenizer= with a loaded model")
        if isinstance(tokenizer, (str, Path)):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.max_batch_size = max_batch_size
        #: The model's context length (prompt + generation), for rollout loops that must stop in time.
        self.max_context_tokens: int | None = getattr(model.config, "max_position_embeddings", None)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token")
        self.pad_token_id = int(pad)
        eos = model.generation_config.eos_token_id
        eos = eos if eos is not None else tokenizer.eos_token_id
        self.default_stop_ids = (
            tuple(eos) if isinstance(eos, (list, tuple)) else ((int(eos),) if eos is not None else ())
        )
        # SamplingParams alone decide sampling: a checkpoint's generation_config (top_k=20,
        # repetition_penalty=1.05, ...) would otherwise fill in every setting they leave unset.
        self.model.generation_config = GenerationConfig(
            bos_token_id=model.generation_config.bos_token_id,
            eos_token_id=list(self.default_stop_ids) or None,
            pad_token_id=self.pad_token_id,
        )
        #: The weight version generating now: 0 as loaded, then each ``update_weights``'s version.
        self.version = 0
        self._weights_lock = threading.Lock()  # generate and update_weights never overlap

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Generation]:
        """Continuations of each prompt (see :class:`~gym_nemo.policies.token.Generation`)."""
        with self._weights_lock:
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            out: list[Generation] = []
            for start in range(0, len(prompts), self.max_batch_size):
                out += self._generate_batch(
                    [list(map(int, p)) for p in prompts[start : start + self.max_batch_size]], sampling
                )
            for gen in out:
                gen.policy_version = self.version
            return out

    def update_weights(self, weights: WeightsSource, version: int) -> None:
        """Load ``weights`` (a state dict, a safetensors/torch file or a checkpoint folder) as ``version``.

        Checked first, nothing changed on error: the names and shapes must be exactly the model's (tied names
        may be given once) and ``version`` must be greater than :attr:`version`. Values are cast to the model's
        dtype and device. Takes effect from the next ``generate`` call (one in progress finishes first).
        """
        version = check_version(self.version, version)
        state = load_weights(weights)
        ParamSpec.of(self.model).check(shapes_of(state))
        targets = self.model.state_dict(keep_vars=True)
        with self._weights_lock, torch.no_grad():
            check_version(self.version, version)  # another update may have won the race
            for name, tensor in state.items():
                targets[name].copy_(tensor)
            self.version = version

    @torch.inference_mode()
    def _generate_batch(self, prompts: list[list[int]], sampling: SamplingParams) -> list[Generation]:
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        stop_ids = tuple(sampling.stop_token_ids) if sampling.stop_token_ids is not None else self.default_stop_ids
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):  # left padding: every prompt ends where generation starts
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            attention[row, width - len(prompt) :] = 1
        greedy = sampling.temperature == 0
        kwargs: dict[str, Any] = {"do_sample": not greedy}
        if not greedy:
            kwargs.update(
                temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k
            )  # 0 = off (None would mean 50)
        result = self.model.generate(
            input_ids=input_ids.to(self.device),
            attention_mask=attention.to(self.device),
            max_new_tokens=sampling.max_tokens,
            eos_token_id=list(stop_ids) or None,
            pad_token_id=self.pad_token_id,
            output_logits=True,
            return_dict_in_generate=True,
            **kwargs,
        )
        new_ids = result.sequences[:, width:].cpu()
        logits = torch.stack(result.logits, dim=1).float()  # (batch, steps, vocab), raw model logits
        chosen = torch.log_softmax(logits, dim=-1).gather(
            -1, new_ids[:, : logits.shape[1]].unsqueeze(-1).to(logits.device)
        )
        chosen = chosen.squeeze(-1).cpu()
        generations = []
        for row, prompt in enumerate(prompts):
            ids = new_ids[row].tolist()
            finish = "length"
            for i, token in enumerate(ids):
                if token in stop_ids:
                    ids, finish = ids[: i + 1], "stop"
                    break
            ids = ids[: sampling.max_tokens]
            body = ids[:-1] if finish == "stop" else ids
            text = self.tokenizer.decode(body, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            generations.append(
                Generation(
                    token_ids=ids,
                    logprobs=chosen[row, : len(ids)].tolist(),
                    finish_reason=finish,
                    text=text,
                    prompt_ids=prompt,
                )
            )
        return generations
