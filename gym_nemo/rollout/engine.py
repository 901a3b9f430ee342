"""The episode engine: the one loop that plays an episode, and the one place its record is built.

An episode is a generator, :func:`episode`, that says what it needs next and is sent the answer::

    Reset(seed, options)  -> send (observation, info)
    Act()                 -> send the policy's answer: a str (text level), a Generation (token level), or
                             None (the policy has nothing more to say: a replayed transcript ran out)
    Step(action)          -> send (observation, reward, terminated, truncated, info)

and returns its :class:`~gym_nemo.rollout.records.EpisodeRecord` when it ends. A failed request is answered
with :class:`Failed` (the exception): the episode then ends as an infrastructure error, never as reward 0.
Everything an episode is (bookkeeping of rewards, components and the token stream; context limits and token
budgets; how env and policy failures are recorded) lives in the generator and in :class:`EpisodeTrace`.
Drivers only decide how requests are served:

* :func:`play`: one env, in the calling thread (the async collector's workers, eval's text runs);
* :func:`aplay`: one env from asyncio, env calls in a worker thread (verl's agent loop);
* :func:`play_lockstep`: many envs, one batched ``generate`` per turn (TRL's ``rollout_func``);
* :class:`VectorDriver`: a Gymnasium ``VectorEnv`` with ``SAME_STEP`` autoreset, one batched ``step`` per turn
  (the lock-step collectors).

>>> import gymnasium as gym, gym_nemo
>>> from gym_nemo.rollout.engine import EpisodeTrace, play
>>> env = gym.make("nemo/TargetChar-v0")
>>> trace = EpisodeTrace("nemo/TargetChar-v0", policy="echo")
>>> record = play(env, lambda t: "aaaa", trace, options={"task_id": "target-char/a"})
>>> record.reward, record.num_turns, record.terminated
(1.0, 1, True)
>>> env.close()
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium.vector import VectorEnv

from gym_nemo.policies.token import Generation
from gym_nemo.rollout.records import EpisodeRecord
from gym_nemo.wrappers.vector import unbatch_info


# ---------------------------------------------------------------------- requests and answers
@dataclass(frozen=True)
class Reset:
    """The episode needs ``env.reset(seed=seed, options=options)``."""

    seed: int | None = None
    options: dict[str, Any] | None = None


@dataclass(frozen=True)
class Act:
    """The episode needs the policy's next answer (it reads :attr:`EpisodeTrace.observation` / ``context``)."""


@dataclass(frozen=True)
class Step:
    """The episode needs ``env.step(action)``."""

    action: Any


@dataclass(frozen=True)
class Failed:
    """The answer to a request that raised: the episode ends as an infrastructure error."""

    error: BaseException


Request = Reset | Act | Step
Episode = Generator[Request, Any, EpisodeRecord]


# ---------------------------------------------------------------------- one episode's bookkeeping
@dataclass
class EpisodeTrace:
    """Everything recorded about one episode while it runs; :meth:`record` turns it into an ``EpisodeRecord``.

    Token-level episodes (a :class:`~gym_nemo.wrappers.TokenEnv`: id-array observations) also keep the token
    stream: ``prompt_ids`` (the reset observation), then ``completion_ids`` with ``completion_mask`` (1 = a
    policy token, 0 = an env token) and ``completion_logprobs`` (0.0 on env tokens), one finish reason per turn.

    ``describe`` supplies the task row and versions when the final info lacks them (an episode cut before the
    env finished it); drivers set it from the env.
    """

    env_id: str
    policy: str = ""
    seed: int | None = None
    group: int | None = None
    task_id: str | None = None
    describe: Callable[[], tuple[dict[str, Any], dict[str, Any]]] | None = None
    started: float = field(default_factory=time.monotonic)
    observation: Any = None
    info: dict[str, Any] = field(default_factory=dict)
    prompt_ids: list[int] | None = None
    completion_ids: list[int] = field(default_factory=list)
    completion_mask: list[int] = field(default_factory=list)
    completion_logprobs: list[float] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    policy_versions: list[int] = field(default_factory=list)  # per turn, where generations carry one
    step_rewards: list[float] = field(default_factory=list)
    components: list[dict[str, float]] = field(default_factory=list)
    track_versions: bool = False  # record each turn's policy version (streaming with weight updates)
    env_failed: bool = False  # the env raised: its state is unknown, drivers drop it
    cut: str | None = None  # why the engine ended the episode before the env did (context_limit, budget)

    @property
    def token_level(self) -> bool:
        return self.prompt_ids is not None

    @property
    def context(self) -> list[int]:
        """The token stream so far: what the policy continues."""
        return (self.prompt_ids or []) + self.completion_ids

    @property
    def context_length(self) -> int:
        """``len(self.context)``, without building it."""
        return len(self.prompt_ids or ()) + len(self.completion_ids)

    @property
    def turns(self) -> int:
        return len(self.step_rewards)

    @property
    def reward(self) -> float:
        return float(sum(self.step_rewards))

    def start(self, observation: Any, info: dict[str, Any]) -> None:
        """The reset's observation and info (an id array makes the episode token-level)."""
        self.observation, self.info = observation, info
        if isinstance(observation, np.ndarray):
            self.prompt_ids = _ids(observation)

    def add_generation(self, gen: Generation) -> None:
        """The policy's ids (mask 1) with their logprobs and the turn's finish reason."""
        self.completion_ids += gen.token_ids
        self.completion_mask += [1] * len(gen.token_ids)
        self.completion_logprobs += [float(x) for x in gen.logprobs]
        self.finish_reasons.append(gen.finish_reason)
        if self.track_versions and gen.policy_version is not None:
            self.policy_versions.append(int(gen.policy_version))

    def add_step(self, observation: Any, reward: float, info: dict[str, Any]) -> None:
        """A step's result; at token level the observation is the ids the env added (mask 0, logprob 0.0)."""
        self.observation, self.info = observation, info
        if self.token_level:
            delta = _ids(observation)
            self.completion_ids += delta
            self.completion_mask += [0] * len(delta)
            self.completion_logprobs += [0.0] * len(delta)
        self.step_rewards.append(float(reward))
        self.components.append(dict(info.get("reward_components", {})))

    def record(self, *, terminated: bool, truncated: bool = False, infra_error: str | None = None) -> EpisodeRecord:
        """The episode's record. ``truncated`` is the env's flag; an episode the env did not end is truncated."""
        info = self.info
        task_row, versions = info.get("task_row"), info.get("versions")
        if (task_row is None or versions is None) and self.describe is not None:
            described_row, described_versions = self.describe()
            task_row, versions = task_row or described_row, versions or described_versions
        infra_error = infra_error or info.get("infra_error")
        terminated = terminated and infra_error is None
        tokens = self.token_level
        return EpisodeRecord(
            env_id=self.env_id,
            task_id=str(info.get("task_id", self.task_id or "")),
            task_row=dict(task_row or {}),
            messages=list(info.get("messages", [])),
            reward=self.reward,
            step_rewards=self.step_rewards,
            reward_components=self.components,
            verdict=info.get("verdict"),
            terminated=terminated,
            truncated=truncated or not terminated,
            infra_error=infra_error,
            num_turns=int(info.get("turn", self.turns)),
            duration_s=time.monotonic() - self.started,
            policy=self.policy,
            seed=self.seed,
            versions=dict(versions or {}),
            prompt_ids=self.prompt_ids,
            completion_ids=self.completion_ids if tokens else None,
            completion_mask=self.completion_mask if tokens else None,
            completion_logprobs=self.completion_logprobs if tokens else None,
            finish_reasons=self.finish_reasons if tokens else None,
            policy_versions=self.policy_versions or None,
            group=self.group,
        )


def _ids(observation: Any) -> list[int]:
    """Token ids as Python ints (``[int(t) for t in observation]``, at C speed)."""
    return np.asarray(observation).astype(np.int64, copy=False).tolist()


@dataclass
class PolicyTokens:
    """A token-level record's completion as trainers take it: cut after the last policy token (the env tokens
    after it carry no training signal), ``mask`` 1 on policy tokens, ``logprobs`` 0.0 on env tokens."""

    ids: list[int]
    mask: list[int]
    logprobs: list[float]


def policy_tokens(record: EpisodeRecord) -> PolicyTokens:
    """The record's completion up to its last policy token (see :class:`PolicyTokens`)."""
    mask = record.completion_mask or []
    end = max((i for i, m in enumerate(mask) if m), default=-1) + 1
    return PolicyTokens(
        list((record.completion_ids or [])[:end]), list(mask[:end]), list((record.completion_logprobs or [])[:end])
    )


def failure(what: str, error: BaseException) -> str:
    """The infra-error text of a failed call: ``"env step failed: RuntimeError: ..."``."""
    return f"{what} failed: {type(error).__name__}: {error}"


# ---------------------------------------------------------------------- the loop
def episode(
    trace: EpisodeTrace,
    *,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
    reset: bool = True,
    context_limit: int | None = None,
    max_response_tokens: int | None = None,
) -> Episode:
    """Play one episode into ``trace`` (see the module docstring); returns its record.

    ``reset=False``: the episode starts from ``trace.observation``/``trace.info`` already set (a vector env's
    autoreset). ``context_limit``: an episode whose context exceeds it is ended before generating, ``truncated``
    with ``trace.cut == "context_limit"``. ``max_response_tokens``: the episode ends (truncated, ``cut ==
    "budget"``) once its completion holds that many tokens.
    """
    if reset:
        answer = yield Reset(seed, options)
        if isinstance(answer, Failed):
            trace.env_failed = True
            return trace.record(terminated=False, infra_error=failure("env reset", answer.error))
        trace.start(*answer)
    while True:
        if context_limit is not None and trace.context_length > context_limit:
            trace.cut = "context_limit"
            return trace.record(terminated=False)
        if max_response_tokens is not None and len(trace.completion_ids) >= max_response_tokens:
            trace.cut = "budget"
            return trace.record(terminated=False)
        answer = yield Act()
        if isinstance(answer, Failed):
            return trace.record(terminated=False, infra_error=failure("policy call", answer.error))
        if answer is None:
            trace.cut = "policy_done"
            return trace.record(terminated=False)
        generation = answer if isinstance(answer, Generation) else None
        result = yield Step(generation.token_ids if generation is not None else answer)
        if generation is not None:  # added once the step is back: a deadline's record mid-step ends at the prompt
            trace.add_generation(generation)
        if isinstance(result, Failed):
            trace.env_failed = True
            return trace.record(terminated=False, infra_error=failure("env step", result.error))
        observation, reward, terminated, truncated, info = result
        trace.add_step(observation, float(reward), info)
        if terminated or truncated:
            return trace.record(terminated=bool(terminated), truncated=bool(truncated))


def _serve_env(env: Any, request: Reset | Step) -> Any:
    try:
        if isinstance(request, Reset):
            return env.reset(seed=request.seed, options=request.options)
        return env.step(request.action)
    except Exception as exc:  # the env's failure, not the policy's
        return Failed(exc)


def _snapshot_task(trace: EpisodeTrace, env: Any, request: Reset | Step, answer: Any) -> None:
    """After a successful reset, remember the episode's task (a reference: cheap) so a record the final info will
    not complete (an episode cut or failed before the env ends it) can name its row and the env's versions;
    unless the driver already said how to describe it. The env may have moved on to another task by then (a
    deadline records an episode whose worker is still busy), hence the reference taken now."""
    if not isinstance(request, Reset) or isinstance(answer, Failed) or trace.describe is not None:
        return
    unwrapped = env.unwrapped
    task = getattr(unwrapped, "task", None)
    versions = getattr(unwrapped, "versions", dict)
    trace.describe = lambda: ((dict(task.row) if task is not None else {}), dict(versions()))


def play(
    env: Any,
    act: Callable[[EpisodeTrace], str | Generation],
    trace: EpisodeTrace,
    *,
    aborted: Callable[[], bool] | None = None,
    env_time: Callable[[float], None] | None = None,
    **episode_kwargs: Any,
) -> EpisodeRecord | None:
    """Play one episode of ``env`` in this thread; ``act(trace)`` is the policy's answer to the current state.

    An exception from ``act`` ends the episode as a failed policy call (a ``BaseException`` that is not an
    ``Exception`` propagates: the caller's way to stop). ``aborted()`` is checked after every env and policy
    call: when it returns True the episode is dropped (``None``: someone else, e.g. a deadline, recorded it).
    ``env_time(seconds)`` is told the duration of each env call. ``episode_kwargs`` go to :func:`episode`.
    """
    steps = episode(trace, **episode_kwargs)
    answer: Any = None
    try:
        while True:
            request = steps.send(answer)
            if isinstance(request, Act):
                try:
                    answer = act(trace)
                except Exception as exc:
                    answer = Failed(exc)
            else:
                tick = time.monotonic()
                answer = _serve_env(env, request)
                if env_time is not None:
                    env_time(time.monotonic() - tick)
                _snapshot_task(trace, env, request, answer)
            if aborted is not None and aborted():
                return None
    except StopIteration as done:
        return done.value
    finally:
        steps.close()


async def aplay(
    env: Any,
    generate: Callable[[EpisodeTrace], Awaitable[str | Generation]],
    trace: EpisodeTrace,
    **episode_kwargs: Any,
) -> EpisodeRecord:
    """:func:`play` for asyncio: ``await generate(trace)`` answers, env calls run in a worker thread so
    concurrent episodes overlap. Exceptions from ``generate`` propagate (the caller's server failed)."""
    steps = episode(trace, **episode_kwargs)
    answer: Any = None
    try:
        while True:
            request = steps.send(answer)
            if isinstance(request, Act):
                answer = await generate(trace)
            else:
                answer = await asyncio.to_thread(_serve_env, env, request)
                _snapshot_task(trace, env, request, answer)
    except StopIteration as done:
        return done.value
    finally:
        steps.close()


def replay(env: Any, row: dict[str, Any], *, env_id: str = "", seed: int | None = None) -> EpisodeRecord:
    """Play a stored episode again: reset on the row's task (``options={"task": row}``) and send its assistant
    messages as the actions, in order. The env verifies again, so the record's rewards are today's verdicts on
    the same transcript (re-scoring, conformance against stored rewards). A transcript that runs out before
    the env ends the episode is recorded ``truncated`` with ``trace.cut == "policy_done"``.
    """
    actions = iter([m.get("content") or "" for m in row.get("messages", []) if m.get("role") == "assistant"])
    trace = EpisodeTrace(env_id or str(row.get("env_id", "")), "replay", seed=seed)
    record = play(env, lambda _: next(actions, None), trace, seed=seed, options={"task": row})
    assert record is not None
    return record


class PushedEpisode:
    """One episode of ``env`` whose actions arrive one call at a time, for callers that own the loop (TRL's tool
    loop calls a tool, then submits an answer): :meth:`act` answers the pending request and serves env requests
    until the episode waits for the next action or ends (then :attr:`record` is set).
    """

    def __init__(self, env: Any, trace: EpisodeTrace, **episode_kwargs: Any) -> None:
        self.env, self.trace = env, trace
        self.record: EpisodeRecord | None = None
        self._steps = episode(trace, **episode_kwargs)
        self._advance(None)

    @property
    def done(self) -> bool:
        return self.record is not None

    def act(self, action: str | Generation | None) -> None:
        """The policy's answer to the current state (see :func:`episode`); the result is in :attr:`trace`."""
        if self.done:
            raise RuntimeError("the episode is over")
        self._advance(action)

    def _advance(self, answer: Any) -> None:
        try:
            request = self._steps.send(answer)
            while not isinstance(request, Act):
                answer = _serve_env(self.env, request)
                _snapshot_task(self.trace, self.env, request, answer)
                request = self._steps.send(answer)
        except StopIteration as ended:
            self.record = ended.value


def play_lockstep(
    envs: Sequence[Any],
    generate: Callable[[list[EpisodeTrace]], Sequence[str | Generation]],
    traces: Sequence[EpisodeTrace],
    episode_kwargs: Sequence[dict[str, Any]],
    *,
    keep_going: Callable[[bool], bool] | None = None,
) -> list[EpisodeRecord]:
    """Play one episode on each env in lock-step: every turn, one ``generate(traces)`` call answers all episodes
    still running; env calls run one after another. Returns the records in the envs' order.

    ``keep_going(any_running_here)``: whether to run another turn (default: while an episode runs here); a
    multi-process trainer uses it to keep every process in each batched call, with an empty batch if need be.
    """
    episodes = [
        PushedEpisode(env, trace, **kwargs) for env, trace, kwargs in zip(envs, traces, episode_kwargs, strict=True)
    ]
    while (
        keep_going(any(not e.done for e in episodes)) if keep_going is not None else any(not e.done for e in episodes)
    ):
        running = [e for e in episodes if not e.done]
        answers = generate([e.trace for e in running])
        if len(answers) != len(running):
            raise RuntimeError(f"generate returned {len(answers)} answers for {len(running)} episodes")
        for pushed, answer in zip(running, answers, strict=True):
            pushed.act(answer)
    return [e.record for e in episodes if e.record is not None]


# ---------------------------------------------------------------------- vector envs
class VectorDriver:
    """Episodes over a ``VectorEnv`` with ``SAME_STEP`` autoreset (``gym_nemo.make_vec``), one per sub-env slot.

    The collectors start episodes (:meth:`new_wave` for a wave with per-slot seeds, then :meth:`start`; or
    :meth:`start` on an autoreset observation), ask :attr:`waiting` which slots need the policy, and hand the
    policy's answers to :meth:`answer`, which steps the vector env once and returns the records of the episodes
    that ended, in slot order (episodes the env ended first, then those the engine cut). Slots without an
    episode are stepped with ``idle_action``.
    """

    def __init__(self, envs: VectorEnv, *, idle_action: Any = "") -> None:
        self.envs = envs
        self.idle_action = idle_action
        self.episodes: dict[int, tuple[Episode, EpisodeTrace]] = {}
        self.observations: Any = None
        self._batched_info: dict[str, Any] = {}
        self._infos: dict[int, dict[str, Any]] = {}  # unbatched on demand: idle slots' infos are never read

    def info(self, slot: int) -> dict[str, Any]:
        """The info of ``slot``'s last reset or step."""
        if slot not in self._infos:
            self._infos[slot] = unbatch_info(self._batched_info, slot)
        return self._infos[slot]

    def new_wave(self, seed: int | list[int] | None) -> None:
        """Reset every sub-env (slots keep no episode until :meth:`start`)."""
        self.observations, self._batched_info = self.envs.reset(seed=seed)
        self._infos.clear()
        self.episodes.clear()

    def start(self, slot: int, trace: EpisodeTrace, **episode_kwargs: Any) -> EpisodeRecord | None:
        """Start an episode in ``slot`` from its current observation; a record if it ends before acting."""
        trace.start(self.observations[slot], self.info(slot))
        trace.describe = trace.describe or (lambda: self._describe(slot))
        steps = episode(trace, reset=False, **episode_kwargs)
        try:
            request = next(steps)
        except StopIteration as done:
            return done.value
        assert isinstance(request, Act)
        self.episodes[slot] = (steps, trace)
        return None

    @property
    def waiting(self) -> list[int]:
        """The slots whose episode waits for the policy, in order."""
        return sorted(self.episodes)

    def traces(self, slots: Sequence[int]) -> list[EpisodeTrace]:
        return [self.episodes[i][1] for i in slots]

    def answer(self, answers: dict[int, str | Generation]) -> list[tuple[int, EpisodeRecord]]:
        """Answer the waiting episodes, step the vector env once, and return the episodes that ended."""
        actions: list[Any] = [self.idle_action] * self.envs.num_envs
        for slot, answer in answers.items():
            steps, _ = self.episodes[slot]
            request = steps.send(answer)
            assert isinstance(request, Step)
            actions[slot] = request.action
        if isinstance(self.idle_action, np.ndarray):  # token ids: one int64 array per slot
            actions = tuple(np.asarray(a, dtype=self.idle_action.dtype) for a in actions)
        self.observations, rewards, terminated, truncated, self._batched_info = self.envs.step(actions)
        self._infos.clear()
        ended: list[tuple[int, EpisodeRecord]] = []
        cut: list[tuple[int, EpisodeRecord]] = []  # ended by the engine before acting (context limit): after
        for slot in sorted(answers):
            steps, trace = self.episodes[slot]
            info, done = self.info(slot), bool(terminated[slot] or truncated[slot])
            result = (
                info["final_obs"] if done else self.observations[slot],
                float(rewards[slot]),
                bool(terminated[slot]),
                bool(truncated[slot]),
                info["final_info"] if done else info,
            )
            try:
                steps.send(result)
            except StopIteration as finished:
                del self.episodes[slot]
                (cut if trace.cut is not None else ended).append((slot, finished.value))
        return ended + cut

    def _describe(self, slot: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """The slot's task row and versions, for a record its final info does not complete; empty for an env
        without them (a remote env, a dead one: the record then says what the info said)."""
        try:
            task = self.envs.get_attr("task")[slot]
            return dict(task.row), dict(self.envs.call("versions")[slot])
        except Exception:
            return {}, {}
