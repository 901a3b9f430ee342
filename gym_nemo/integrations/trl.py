"""TRL ``GRPOTrainer`` adapters: gym_nemo episodes as a ``rollout_func``, or an env as an ``environment_factory``.

Two ways to train on any ``nemo/*`` env with TRL (1.16, the ``[trl]`` extra):

**rollout_func** (token-exact, multi-turn, any tools): ``rollout = EnvRollout(env_id)``; pass
``rollout_func=rollout``, ``train_dataset=rollout.dataset()`` and ``reward_funcs=[env_reward]``. Each prompt TRL
hands over (already repeated ``num_generations`` times, so a group plays one task) becomes one episode of the
env wrapped in :class:`~gym_nemo.wrappers.TokenEnv`: the env's tools run, feedback comes back, and the policy's
ids are never re-tokenized. Generation uses the trainer's own model (transformers ``generate`` under TRL's
``unwrap_model_for_generation``, through :class:`~gym_nemo.policies.hf.HFPolicy`) or, with ``use_vllm=True``,
TRL's own vLLM engine (``trainer.vllm_generation``, weights synced by TRL before the call), with the trainer's
sampling settings (``temperature``, ``top_p``, ``top_k``, ``max_completion_length`` per turn) and its eos ids as
stop tokens. It returns ``prompt_ids``, ``completion_ids`` (policy and env tokens of every later turn),
``logprobs`` (the sampling logprobs; 0.0 on env tokens), ``env_mask`` (1 = a token the policy sampled: TRL
trains on those only), and ``env_reward`` / ``env_turns`` / ``env_infra_error`` for the reward function.
Tokens the env adds after the last policy token (the template's closing newline) carry no training signal and
are left out, so TRL's ``clipped_ratio`` (completions not ending in eos) counts cut generations. An episode
that ends in an infra error (``info["infra_error"]``) gets ``env_reward=None`` (TRL then leaves the sample out
of that reward's mean) and an all-zero ``env_mask``: it is never trained on as a wrong answer.

**environment_factory** (TRL's own tool loop): ``environment_factory(env_id)`` returns a factory whose instances
expose the env's tools as typed, documented methods (TRL turns them into tool schemas and calls them when the
model emits a tool call; each call is one env step). ``reset(**row)`` starts the episode on the row's
``task_id``; the final answer is scored by :func:`environment_reward`, which submits the last assistant
message to the env. TRL's loop re-renders text, so this path is not token-exact; prefer ``rollout_func``.

Datasets: ``task_dataset(env_id)`` (or ``EnvRollout.dataset()``) has one row per task: ``prompt`` (the env's
chat messages) and ``task_id``.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym

import gym_nemo  # noqa: F401  (registers the nemo/* envs)
from gym_nemo.policies.token import Generation, SamplingParams
from gym_nemo.rollout.engine import EpisodeTrace, PushedEpisode, play_lockstep, policy_tokens
from gym_nemo.wrappers.token_env import TokenEnv


def task_dataset(env_id: str, *, num_rows: int | None = None, env_kwargs: Mapping[str, Any] | None = None) -> Any:
    """A ``datasets.Dataset`` with one row per task of ``env_id``: ``prompt`` (the env's messages) and ``task_id``.

    ``num_rows`` cycles through the task pool (or cuts it). The prompt is what ``reset`` shows the policy, so
    TRL's logs and completions read naturally; the episode itself is always played from the env.
    """
    from datasets import Dataset

    env = gym.make(env_id, **dict(env_kwargs or {}))
    try:
        pool = env.unwrapped.tasks
        count = len(pool) if num_rows is None else num_rows
        rows = []
        for i in range(count):
            _, info = env.reset(options={"task_index": i % len(pool)})
            rows.append({"prompt": info["messages"], "task_id": str(info["task_id"])})
    finally:
        env.close()
    return Dataset.from_list(rows)


def _prompt_key(messages: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps([{"role": m.get("role"), "content": m.get("content")} for m in messages], ensure_ascii=False)


class TrainerPolicy:
    """The :class:`~gym_nemo.policies.token.TokenPolicy` protocol over a ``GRPOTrainer``'s model or vLLM engine."""

    name = "trl-trainer"

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def sampling(self) -> SamplingParams:
        """The trainer's sampling settings (per turn: ``max_completion_length`` tokens, its eos ids stop)."""
        t = self.trainer
        return SamplingParams(
            max_tokens=int(t.max_completion_length),
            temperature=float(t.temperature),
            top_p=float(t.top_p if t.top_p is not None else 1.0),
            top_k=int(t.top_k or 0),
            stop_token_ids=tuple(int(i) for i in t.eos_token_ids),
        )

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Generation]:
        if getattr(self.trainer, "use_vllm", False):
            return self._generate_vllm(prompts, sampling)
        return self._generate_hf(prompts, sampling)

    def _generate_hf(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Generation]:
        from trl.models import unwrap_model_for_generation

        from gym_nemo.policies.hf import HFPolicy

        t = self.trainer
        with unwrap_model_for_generation(
            t.model_wrapped, t.accelerator, gather_deepspeed3_params=t.args.ds3_gather_for_generation
        ) as model:
            saved_config, was_training = model.generation_config, model.training
            try:  # HFPolicy puts the model in eval mode with a bare generation config: undone below
                policy = HFPolicy(model, t.processing_class, device=str(t.accelerator.device))
                return policy.generate(prompts, sampling)
            finally:
                model.generation_config = saved_config
                model.train(was_training)

    def _generate_vllm(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Generation]:
        # TRL's vLLM engine takes its own sampling settings (the trainer's); every process must call it with the
        # same number of prompts (it gathers them), so shorter lists are padded with a copy and the copies dropped.
        t = self.trainer
        prompts = [list(map(int, p)) for p in prompts]
        wanted = len(prompts)
        if t.accelerator.num_processes > 1:
            import torch

            counts = t.accelerator.gather(torch.tensor([wanted], device=t.accelerator.device))
            most = int(counts.max().item())
            filler = prompts[0] if prompts else [int(t.eos_token_ids[0])]
            prompts = prompts + [filler] * (most - wanted)
        if not prompts:
            return []
        _, completion_ids, logprobs, _ = t.vllm_generation.generate(prompts=prompts, images=None, num_generations=1)
        stops = set(sampling.stop_token_ids or t.eos_token_ids)
        out = []
        for prompt, ids, lps in list(zip(prompts, completion_ids, logprobs, strict=True))[:wanted]:
            ids = [int(i) for i in ids]
            finish = "stop" if ids and ids[-1] in stops else "length"
            out.append(Generation(ids, [float(lp[0]) for lp in lps], finish, prompt_ids=prompt))
        return out


class EnvRollout:
    """A TRL ``rollout_func`` that plays ``env_id`` episodes token-exactly (see the module docstring).

    Args:
        env_id: any registered env id (``nemo/*``).
        env_kwargs: passed to ``gym.make`` (``max_turns``, ``data``, ``task_ids``, ...).
        chat_template: passed to :class:`~gym_nemo.wrappers.TokenEnv`.
        pass_tools: passed to :class:`~gym_nemo.wrappers.TokenEnv`.
        template_kwargs: passed to :class:`~gym_nemo.wrappers.TokenEnv`.
        policy: generate with this :class:`~gym_nemo.policies.token.TokenPolicy` instead of the trainer (e.g. a
            vLLM server you keep in sync yourself); ``sampling`` then sets its sampling settings.
    """

    def __init__(
        self,
        env_id: str,
        *,
        env_kwargs: Mapping[str, Any] | None = None,
        chat_template: str | None = None,
        pass_tools: bool = True,
        template_kwargs: Mapping[str, Any] | None = None,
        policy: Any | None = None,
        sampling: SamplingParams | None = None,
    ) -> None:
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        self.token_env_kwargs = {
            "chat_template": chat_template,
            "pass_tools": pass_tools,
            "template_kwargs": template_kwargs,
        }
        self.policy = policy
        self.sampling = sampling
        self._envs: list[TokenEnv] = []
        self._task_by_prompt: dict[str, str] = {}
        self._indexed_all = False

    def dataset(self, num_rows: int | None = None) -> Any:
        """The training dataset (``prompt``, ``task_id``); see :func:`task_dataset`."""
        data = task_dataset(self.env_id, num_rows=num_rows, env_kwargs=self.env_kwargs)
        for row in data:
            self._task_by_prompt[_prompt_key(row["prompt"])] = row["task_id"]
        return data

    def _task_id(self, prompt: Any) -> str:
        if isinstance(prompt, str):
            raise ValueError("EnvRollout needs conversational prompts (lists of messages) from EnvRollout.dataset()")
        key = _prompt_key(prompt)
        if key not in self._task_by_prompt and not self._indexed_all:
            self.dataset()
            self._indexed_all = True
        if key not in self._task_by_prompt:
            raise ValueError(
                f"prompt {key[:200]!r} is not the prompt of any {self.env_id} task; build the train_dataset with "
                "EnvRollout.dataset() (the episode is played from the env, so the prompt must name its task)"
            )
        return self._task_by_prompt[key]

    def _env(self, index: int, tokenizer: Any) -> TokenEnv:
        while len(self._envs) <= index:
            self._envs.append(TokenEnv(gym.make(self.env_id, **self.env_kwargs), tokenizer, **self.token_env_kwargs))
        return self._envs[index]

    def close(self) -> None:
        """Close the pooled envs (sandboxes, verifier workers)."""
        for env in self._envs:
            env.close()
        self._envs.clear()

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        task_ids = [self._task_id(prompt) for prompt in prompts]
        policy = self.policy if self.policy is not None else TrainerPolicy(trainer)
        sampling = self.sampling or (policy.sampling() if isinstance(policy, TrainerPolicy) else SamplingParams())
        envs = [self._env(i, trainer.processing_class) for i in range(len(task_ids))]
        traces = [EpisodeTrace(self.env_id, policy.name, task_id=task_id) for task_id in task_ids]
        synced = isinstance(policy, TrainerPolicy) and getattr(trainer, "use_vllm", False)
        records = play_lockstep(
            envs,
            lambda running: policy.generate([t.context for t in running], sampling),
            traces,
            [{"options": {"task_id": task_id}} for task_id in task_ids],
            keep_going=(lambda here: _any_active_anywhere(trainer, here)) if synced else None,
        )
        streams = [policy_tokens(r) for r in records]  # env tokens after the last policy token teach nothing
        return {
            "prompt_ids": [r.prompt_ids for r in records],
            "completion_ids": [s.ids for s in streams],
            "logprobs": [s.logprobs for s in streams],
            "env_mask": [[0] * len(s.mask) if r.infra_error else s.mask for r, s in zip(records, streams, strict=True)],
            "env_reward": [None if r.infra_error else r.reward for r in records],
            "env_turns": [r.num_turns for r in records],
            "env_infra_error": [r.infra_error for r in records],
        }


def _any_active_anywhere(trainer: Any, active_here: bool) -> bool:
    """Whether any process still has episodes running (every process must take part in each vLLM call)."""
    if trainer.accelerator.num_processes == 1:
        return active_here
    import torch

    flags = trainer.accelerator.gather(torch.tensor([int(active_here)], device=trainer.accelerator.device))
    return bool(flags.sum().item())


def env_reward(
    completions: list[Any], env_reward: list[float | None], log_metric: Callable | None = None, **kwargs: Any
) -> list[float | None]:
    """TRL reward function: the env's episode return from :class:`EnvRollout` (``None`` for infra errors)."""
    if log_metric is not None:
        turns, errors = kwargs.get("env_turns") or [], kwargs.get("env_infra_error") or []
        if turns:
            log_metric("env/turns_mean", sum(turns) / len(turns))
        if errors:
            log_metric("env/infra_error_rate", sum(e is not None for e in errors) / len(errors))
    return list(env_reward)


# ---------------------------------------------------------------------- environment_factory

_PY_TYPES: dict[str, type] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "array": list,
    "object": dict,
}


class NemoToolEnvironment:
    """Base of the classes :func:`environment_factory` builds: one gym_nemo env, its tools as methods."""

    env_id: str = ""
    env_kwargs: Mapping[str, Any] = {}

    def __init__(self) -> None:
        self._env = gym.make(self.env_id, **dict(self.env_kwargs))
        self._episode: PushedEpisode | None = None

    def reset(self, **row: Any) -> None:
        """Start an episode on the row's ``task_id`` (a row of :func:`task_dataset`); the prompt is the row's."""
        if "task_id" not in row:
            raise ValueError("environment_factory rows need a 'task_id' column: build them with task_dataset()")
        task_id = str(row["task_id"])
        trace = EpisodeTrace(self.env_id, "trl-tools", task_id=task_id)
        self._episode = PushedEpisode(self._env, trace, options={"task_id": task_id})
        if self._episode.done:  # the reset itself failed
            raise RuntimeError(str(self._episode.record.infra_error if self._episode.record else "reset failed"))
        return None

    @property
    def _done(self) -> bool:
        return self._episode is None or self._episode.done

    @property
    def reward(self) -> float:
        """The episode's return so far."""
        return self._episode.trace.reward if self._episode is not None else 0.0

    @property
    def infra_error(self) -> str | None:
        if self._episode is None:
            return None
        record = self._episode.record
        return record.infra_error if record is not None else self._episode.trace.info.get("infra_error")

    def _act(self, message: str) -> str:
        if self._done:
            return "[the episode is over; no further calls are processed]"
        assert self._episode is not None
        self._episode.act(message)  # the engine steps the env (TRL's tool loop owns the turns)
        return str(self._episode.trace.observation)

    def _call_tool(self, name: str, arguments: dict[str, Any]) -> str:
        call = {"name": name, "arguments": {k: v for k, v in arguments.items() if v is not None}}
        return self._act(f"<tool_call>\n{json.dumps(call, ensure_ascii=False)}\n</tool_call>")

    def _submit(self, answer: str) -> float | None:
        """Submit the final answer (if the episode is still open); the episode's return, None on infra error."""
        if not self._done:
            self._act(answer)
        return None if self.infra_error else self.reward


def _tool_method(schema: Mapping[str, Any]) -> Callable[..., str]:
    """A method with the tool's name, typed keyword parameters and a Google-style docstring (TRL's tool format)."""
    spec = schema["function"]
    name = spec["name"]
    params = spec.get("parameters") or {}
    props: Mapping[str, Any] = params.get("properties") or {}
    required = set(params.get("required") or [])

    def method(self: NemoToolEnvironment, **kwargs: Any) -> str:
        return self._call_tool(name, kwargs)

    annotations: dict[str, Any] = {}
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for arg, arg_spec in props.items():
        kind = _PY_TYPES.get(str(arg_spec.get("type")), str)
        annotations[arg] = kind if arg in required else kind | None
        default = inspect.Parameter.empty if arg in required else None
        parameters.append(inspect.Parameter(arg, inspect.Parameter.KEYWORD_ONLY, default=default))
    parameters = [parameters[0]] + [p.replace(annotation=annotations[p.name]) for p in parameters[1:]]
    annotations["return"] = str
    method.__signature__ = inspect.Signature(parameters, return_annotation=str)  # type: ignore[attr-defined]
    method.__annotations__ = annotations
    method.__name__ = method.__qualname__ = name
    args_doc = "\n".join(f"    {arg}: {' '.join(str(s.get('description') or arg).split())}" for arg, s in props.items())
    description = " ".join(str(spec.get("description") or name).split())
    method.__doc__ = f"{description}\n\nArgs:\n{args_doc}\n\nReturns:\n    The tool's output." if props else description
    return method


def environment_factory(env_id: str, **env_kwargs: Any) -> Callable[[], NemoToolEnvironment]:
    """A TRL ``environment_factory`` for ``env_id``: each instance is one env whose tools are its methods.

    An env whose tools come with its task (NeMo Gym rows' ``responses_create_params.tools``) is reset once to
    read them: TRL needs one tool set per environment class, so its tasks should share it."""
    probe = gym.make(env_id, **env_kwargs)
    try:
        tools = list(probe.unwrapped.tools)
        if not tools:
            probe.reset(seed=0)
            tools = list(probe.unwrapped.tools)
    finally:
        probe.close()
    reserved = {"reset", "get_reward"}
    clashes = [t["function"]["name"] for t in tools if t["function"]["name"] in reserved]
    if clashes:
        raise ValueError(f"{env_id} has tools named {clashes}, which TRL reserves for environment methods")
    namespace: dict[str, Any] = {"env_id": env_id, "env_kwargs": dict(env_kwargs)}
    namespace.update({t["function"]["name"]: _tool_method(t) for t in tools})
    class_name = "".join(ch for ch in env_id.split("/")[-1].split("-")[0] if ch.isalnum()) + "Environment"
    return type(class_name, (NemoToolEnvironment,), namespace)


def environment_reward(completions: list[Any], environments: list[Any] | None = None, **_: Any) -> list[float | None]:
    """TRL reward function for :func:`environment_factory`: submits each final assistant message to its env.

    Returns the episode's return (tool steps included), ``None`` for an infra error or a non-gym_nemo env.
    """
    if environments is None:
        raise ValueError("environment_reward needs GRPOTrainer(environment_factory=environment_factory(env_id))")
    rewards: list[float | None] = []
    for completion, env in zip(completions, environments, strict=True):
        if not isinstance(env, NemoToolEnvironment):
            rewards.append(None)
            continue
        rewards.append(env._submit(_final_text(completion)))
    return rewards


def _final_text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    for message in reversed(completion):
        if message.get("role") == "assistant":
            content = message.get("content") or ""
            return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
    return ""
