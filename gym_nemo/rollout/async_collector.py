"""``collect_token_rollouts_async``: token-level episodes that progress independently, for throughput.

Where the lock-step collector (:mod:`gym_nemo.rollout.token_rollout`) waits for the slowest env of every
step, here each episode moves on its own:

- **Workers.** ``max_in_flight`` worker threads each own one env (built by ``env_fn``, e.g. a
  :class:`~gym_nemo.wrappers.TokenEnv` over a text env) and play episodes from a shared job list: reset,
  then ask the policy for a generation, step, and so on. Env code (sandbox calls, verifiers) mostly waits
  on subprocesses and sockets, which releases the GIL, so a slow env only holds up its own episode.
- **Continuous batching.** Workers put generate requests on a queue. One policy thread takes the first
  request, waits at most ``batch_wait_s`` for more (less when every live episode is already waiting, and
  never past ``max_batch_size``), and calls ``policy.generate`` on that batch. Whatever arrives during the
  call goes into the next batch.
- **Deadline.** An episode running longer than ``episode_timeout_s`` (reset to now) is ended by the main
  thread: recorded ``truncated`` with ``infra_error`` set and the turns it completed (a step still in
  progress is not part of it, so its stream is the template applied to its messages plus the generation
  prompt). Python cannot interrupt a thread, so the stuck worker keeps its env until the call returns and
  then closes it; a fresh worker with a fresh env takes its slot at once.
- **Failures.** An exception from ``env.reset`` or ``env.step`` is recorded as that episode's
  ``infra_error`` (truncated, never a silent 0); the worker replaces its env and goes on. An exception
  from the policy stops the run and is raised.

Records, group sampling (group ``g``'s ``group_size`` episodes reset with seed ``seed + g``, so they play
the same task), resume and ``max_context_tokens`` behave as in ``collect_token_rollouts`` and share its
code; records are appended in the order episodes finish. Metrics are :class:`~gym_nemo.rollout.metrics.RolloutMetrics`;
``policy_s`` is the time inside ``generate`` and ``env_s`` the env time summed over workers divided by
the worker count, so ``env_time_share`` is the mean share of a slot's time spent in its env.
With ``sampling.seed`` set each ``generate`` call gets a distinct derived seed, but batches depend on
timing, so an async run is not bit-reproducible.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym

from gym_nemo.policies.token import Generation, SamplingParams, TokenPolicy
from gym_nemo.rollout.engine import EpisodeTrace, play
from gym_nemo.rollout.metrics import RolloutMetrics, log_batch, rollout_metrics
from gym_nemo.rollout.records import EpisodeRecord, RecordSink
from gym_nemo.rollout.token_rollout import _resume, call_sampling
from gym_nemo.tracking import MetricsLogger


class _Stopped(BaseException):
    """The run is over (finished or failed): a worker has nothing left to do. A BaseException, so the engine
    does not record it as a failed policy call."""


@dataclass(eq=False)  # hashed by identity: slots live in a set
class _Slot:
    """One episode in flight: who plays it, its trace, and whether it has been recorded."""

    trace: EpisodeTrace
    worker: _Worker | None = None
    _claimed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self) -> bool:
        """True for the first caller only: the worker (finished) and the deadline (expired) race for it."""
        with self._lock:
            if self._claimed:
                return False
            self._claimed = True
            return True


class _Worker(threading.Thread):
    def __init__(self, run: _Run) -> None:
        super().__init__(daemon=True, name="gym-nemo-episode")
        self.run_ = run
        self.retired = threading.Event()
        self.env: gym.Env | None = None

    def run(self) -> None:
        run = self.run_
        try:
            while not run.stop.is_set() and not self.retired.is_set():
                try:
                    group = run.jobs.get_nowait()
                except queue.Empty:
                    return
                if self.env is None:
                    self.env = run.env_fn()
                self._play(group)
        except _Stopped:
            pass
        except BaseException as exc:
            run.fail(exc)
        finally:
            if self.env is not None:
                with contextlib.suppress(Exception):  # a broken env's close must not hide the run's result
                    self.env.close()
            run.worker_done(self)

    def _play(self, group: int) -> None:
        run = self.run_
        trace = EpisodeTrace(
            run.env_id, run.policy.name, seed=run.seed, group=group, prompt_ids=[], track_versions=run.track_versions
        )
        slot = _Slot(trace, worker=self)
        run.started(slot)
        env = self.env
        assert env is not None
        record = play(
            env,
            lambda t: run.request(t.context),
            trace,
            seed=run.seed + group,
            context_limit=run.context_limit,
            aborted=self.retired.is_set,  # the deadline recorded the episode
            env_time=run.add_env_time,
        )
        if record is not None:
            run.finish(slot, record)
        if trace.env_failed:  # its state is unknown: the next episode builds a fresh env
            self.env = None
            with contextlib.suppress(Exception):
                env.close()


class _Run:
    """State shared by the main thread, the workers and the policy thread."""

    def __init__(
        self,
        env_fn: Callable[[], gym.Env],
        policy: TokenPolicy,
        sampling: SamplingParams,
        *,
        env_id: str,
        seed: int,
        already: int,
        context_limit: int | None,
        max_batch_size: int,
        batch_wait_s: float,
    ) -> None:
        self.env_fn, self.policy, self.sampling = env_fn, policy, sampling
        self.env_id, self.seed, self.already = env_id, seed, already
        self.context_limit = context_limit
        self.max_batch_size, self.batch_wait_s = max_batch_size, batch_wait_s
        self.jobs: queue.Queue[int] = queue.Queue()
        self.requests: queue.Queue[tuple[list[int], Future[Generation]]] = queue.Queue()
        self.results: queue.Queue[EpisodeRecord] = queue.Queue()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.slots: set[_Slot] = set()
        self.workers: set[_Worker] = set()
        self.env_s = self.policy_s = 0.0
        self.calls = 0
        self.policy_lock = threading.Lock()  # held by each generate call; weight updates take it between calls
        self.track_versions = False  # records keep each turn's policy version (the streaming collector)

    # ------------------------------------------------------------------ bookkeeping
    def fail(self, exc: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = exc
        self.stop.set()

    def add_env_time(self, seconds: float) -> None:
        with self.lock:
            self.env_s += seconds

    def started(self, slot: _Slot) -> None:
        with self.lock:
            self.slots.add(slot)

    def worker_done(self, worker: _Worker) -> None:
        with self.lock:
            self.workers.discard(worker)

    def finish(self, slot: _Slot, record: EpisodeRecord) -> None:
        """Hand the record to the main thread, the only writer, unless the slot was already recorded."""
        if not slot.claim():
            return
        with self.lock:
            self.slots.discard(slot)
        self.results.put(record)

    # ------------------------------------------------------------------ the policy side
    def request(self, context: list[int]) -> Generation:
        """Queue a generate request and wait for its batch to come back. ``context`` is handed over, not copied
        (``EpisodeTrace.context`` builds a new list each time)."""
        future: Future[Generation] = Future()
        self.requests.put((context, future))
        while True:
            if self.stop.is_set() and not future.done():
                raise _Stopped
            try:
                return future.result(timeout=0.1)
            except TimeoutError:
                continue

    def serve_policy(self) -> None:
        """The policy thread: batch whatever requests are pending and call ``generate`` on them."""
        try:
            while not self.stop.is_set():
                try:
                    batch = [self.requests.get(timeout=0.05)]
                except queue.Empty:
                    continue
                until = time.monotonic() + self.batch_wait_s
                while len(batch) < self.max_batch_size:
                    with self.lock:
                        live = sum(1 for s in self.slots if s.worker is not None and not s.worker.retired.is_set())
                    if len(batch) >= live:  # every live episode is waiting: no one else will ask
                        break
                    left = until - time.monotonic()
                    try:
                        batch.append(self.requests.get(timeout=left) if left > 0 else self.requests.get_nowait())
                    except queue.Empty:
                        break
                sampling = call_sampling(self.sampling, self.already, self.calls)
                self.calls += 1
                tick = time.monotonic()
                with self.policy_lock:  # a weight update waits for the call to end
                    version = getattr(self.policy, "version", None)
                    generations = self.policy.generate([context for context, _ in batch], sampling)
                self.policy_s += time.monotonic() - tick
                for gen in generations:
                    gen.policy_version = gen.policy_version if gen.policy_version is not None else version
                if len(generations) != len(batch):
                    raise RuntimeError(f"{self.policy.name}: {len(generations)} generations for {len(batch)} prompts")
                for (_, future), gen in zip(batch, generations, strict=True):
                    future.set_result(gen)
        except BaseException as exc:
            self.fail(exc)


class _Collector:
    """The main thread's side of a run: starts the policy thread and the workers, hands out finished records,
    ends expired episodes and refills the slots of retired workers. Used by both collectors of this module."""

    def __init__(self, run: _Run, *, max_in_flight: int, episode_timeout_s: float | None) -> None:
        self.run, self.max_in_flight, self.episode_timeout_s = run, max_in_flight, episode_timeout_s
        self.policy_thread = threading.Thread(target=run.serve_policy, daemon=True, name="gym-nemo-policy")
        self.policy_thread.start()

    def _spawn(self) -> None:
        worker = _Worker(self.run)
        with self.run.lock:
            self.run.workers.add(worker)
        worker.start()

    def refill(self) -> None:
        """Start workers for queued jobs, up to ``max_in_flight`` live ones."""
        run = self.run
        with run.lock:
            live = sum(1 for w in run.workers if not w.retired.is_set())
        for _ in range(min(self.max_in_flight - live, run.jobs.qsize())):
            self._spawn()

    def poll(self, timeout: float = 0.02) -> EpisodeRecord | None:
        """The next finished record (None if none came within ``timeout``); raises the run's error."""
        run = self.run
        if run.error is not None:
            raise run.error
        try:
            record = run.results.get(timeout=timeout)
        except queue.Empty:
            record = None
        if self.episode_timeout_s is not None:
            now = time.monotonic()
            with run.lock:
                expired = [s for s in run.slots if now - s.trace.started > self.episode_timeout_s]
            for slot in expired:
                if slot.worker is not None:
                    slot.worker.retired.set()  # it records nothing more; a fresh worker takes the slot
                error = f"episode deadline of {self.episode_timeout_s:g} s exceeded"
                run.finish(slot, slot.trace.record(terminated=False, infra_error=error))
        self.refill()
        return record

    def close(self) -> None:
        run = self.run
        run.stop.set()
        self.policy_thread.join(timeout=5)
        with run.lock:
            workers = [w for w in run.workers if not w.retired.is_set()]
        for worker in workers:  # retired ones may be stuck in an env call: they are daemons
            worker.join(timeout=5)


def collect_token_rollouts_async(
    env_fn: Callable[[], gym.Env],
    policy: TokenPolicy,
    num_episodes: int,
    *,
    env_id: str,
    group_size: int = 1,
    sampling: SamplingParams | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    resume: bool = False,
    max_in_flight: int = 8,
    max_batch_size: int = 64,
    batch_wait_s: float = 0.005,
    episode_timeout_s: float | None = None,
    max_context_tokens: int | None = None,
    progress: bool = True,
    on_record: Callable[[EpisodeRecord], None] | None = None,
    logger: MetricsLogger | None = None,
    log_step: int = 0,
) -> tuple[list[EpisodeRecord], RolloutMetrics]:
    """Run ``num_episodes`` token-level episodes with at most ``max_in_flight`` in flight (see the module doc).

    ``env_fn`` builds one token-level env (observations and actions are id sequences, e.g.
    ``lambda: TokenEnv(gym.make(env_id), tokenizer)``); it is called once per worker and again after an
    env failed. Give each env its own tokenizer copy if the tokenizer is not safe to share across threads.
    ``num_episodes`` must be a multiple of ``group_size``. ``out``, ``resume``, ``max_context_tokens`` and
    ``on_record``, ``logger`` and ``log_step`` are as in :func:`~gym_nemo.rollout.token_rollout.collect_token_rollouts`.
    ``episode_timeout_s`` is the per-episode deadline (None: none).

    Examples:
        The scripted policy of :func:`~gym_nemo.rollout.token_rollout.collect_token_rollouts`'s example,
        here behind worker threads that each own one env:

        >>> import gymnasium as gym, gym_nemo
        >>> from gym_nemo.rollout import collect_token_rollouts_async
        >>> from gym_nemo.testing.scripted_policy import ScriptedChatPolicy
        >>> from gym_nemo.testing.tiny_model import build_tokenizer
        >>> from gym_nemo.wrappers import TokenEnv
        >>> tok = build_tokenizer("chatml")
        >>> letters = ScriptedChatPolicy(tok, lambda prompt: prompt.rsplit("the letter ", 1)[1][0] * 4)
        >>> records, metrics = collect_token_rollouts_async(
        ...     lambda: TokenEnv(gym.make("nemo/TargetChar-v0"), tok), letters, 4,
        ...     env_id="nemo/TargetChar-v0", group_size=2, max_in_flight=2, progress=False)
        >>> sorted((r.group, r.task_id, r.reward) for r in records)  # records come in finishing order
        [(0, 'target-char/t', 1.0), (0, 'target-char/t', 1.0), (1, 'target-char/o', 1.0), (1, 'target-char/o', 1.0)]
        >>> metrics.episodes, metrics.infra_error_rate
        (4, 0.0)
    """
    if group_size < 1 or num_episodes % group_size:
        raise ValueError(f"num_episodes ({num_episodes}) must be a multiple of group_size ({group_size})")
    if max_in_flight < 1 or max_batch_size < 1 or batch_wait_s < 0:
        raise ValueError("need max_in_flight >= 1, max_batch_size >= 1, batch_wait_s >= 0")
    sampling = sampling or SamplingParams()
    done_per_group = _resume(Path(out)) if (resume and out is not None) else {}
    run = _Run(
        env_fn,
        policy,
        sampling,
        env_id=env_id,
        seed=seed,
        already=sum(done_per_group.values()),
        context_limit=None if max_context_tokens is None else max_context_tokens - sampling.max_tokens,
        max_batch_size=max_batch_size,
        batch_wait_s=batch_wait_s,
    )
    total = 0
    for group in range(num_episodes // group_size):
        for _ in range(done_per_group.get(group, 0), group_size):
            run.jobs.put(group)
            total += 1
    start = time.monotonic()
    sink = RecordSink(
        out, on_record=on_record, total=num_episodes, done=num_episodes - total, progress=progress, desc=env_id
    )
    collector = _Collector(run, max_in_flight=max_in_flight, episode_timeout_s=episode_timeout_s)
    try:
        collector.refill()
        while len(sink.records) < total:
            record = collector.poll()
            if record is not None:
                sink.add(record)
        if run.error is not None:
            raise run.error
    finally:
        collector.close()
        sink.close()
    records = sink.records
    duration = time.monotonic() - start
    metrics = rollout_metrics(
        records, duration_s=duration, policy_s=run.policy_s, env_s=run.env_s / max(1, min(max_in_flight, total))
    )
    log_batch(logger, records, metrics, log_step)
    return records, metrics
