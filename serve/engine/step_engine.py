"""``--batching steps``: the inference core's step-level path, :class:`StepScheduler` s per served version.

:func:`load_step_runner` opens a version's step graph for serving (or says in one log line
why the version stays on the whole-sequence path); :class:`StepBatching` routes each request
to the step loops of the model version it was admitted under. When a new version starts
serving, the previous version's loops finish what they hold (drain) and stop, so a
hot reload never mixes versions inside one answer, as on the whole-sequence path.

**Step loops.** A version is served by :func:`step_plan` ``[0]`` independent step loops (one
:class:`StepScheduler` each, with its own thread and active set), each running its steps on
``step_plan[1]`` ONNX Runtime threads: by default one loop per usable CPU, one thread each, as
the whole path runs one single-thread worker per CPU (``--workers`` and ``--intra-op-threads``
mean the same on both paths). The loops share the version's sessions (ONNX Runtime's ``Run`` is
thread-safe; on one intra-op thread a run computes on its caller's thread). Each text goes to
the least loaded loop with queue room (:func:`allot`), so a request of several texts is shared
out among the loops (its parts run side by side; it is answered when every part is).
Explain's row plans stay on one loop, since their branches start from their own rows' state.
Measured on this project's 2-core machine (docs/serving.md, bench/steps_ab.py's ``steps``
against ``steps-one-loop``, five alternating rounds): two single-thread loops scored 1.12x one loop on two threads at 32
single-text clients, 1.15x at 8 clients x 8 texts, and tied for a lone text.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import heapq
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
from tokenizers import Tokenizer

from runtime.preprocessing import Vocabulary, encode_for_model, encode_texts, pad_batch
from runtime.repository import ModelVersion, RepositoryError
from runtime.row_plan import RowPlan
from runtime.run_cost import DEFAULT_RUN_COST, RunCost, fit_run_cost
from runtime.session import ModelRunner, providers_for, session_options, thread_plan
from runtime.step_runner import StepRunner, open_step_runner
from serve.engine.scheduler import PendingAnswer, SchedulerObserver, StepPolicy, StepRecord, StepScheduler
from serve.engine.step_sessions import StepSessions, faster_for_one_row
from serve.ops.errors import Overloaded
from serve.ops.settings import Settings

log = logging.getLogger("serve.engine.step_engine")
R = TypeVar("R")
AGREEMENT = 1e-5  # steps vs whole graph on the probe texts: the fp32 promise (one text, one answer)
# Requests with at most this many characters in all are tokenized on the event loop, larger ones in a
# worker thread. The hand-off to a thread and back cost more than tokenizing
# a review: at 32 single-text clients, tokenizing on the loop scored 481-519 texts/s against 334-461 (three
# alternating pairs of `python bench/thread_cpu.py --server-args --batching steps`), and tied at one client.
INLINE_TOKENIZE_CHARS = 4000


def step_plan(settings: Settings) -> tuple[int, int]:
    """(step loops, ONNX Runtime threads per loop's batch session): :func:`~runtime.session.thread_plan` on CPU
    (default: one single-thread loop per usable CPU); one loop on CUDA, which runs a batch in one
    kernel stream.
    """
    if settings.device != "cpu":
        return 1, settings.intra_op_threads or 1
    return thread_plan(settings)


def step_threads(settings: Settings) -> int:
    """ONNX Runtime threads of each step loop's batch session (:func:`step_plan`'s second half)."""
    return step_plan(settings)[1]


def load_step_runner(model: ModelVersion, settings: Settings, threads: int | None = None) -> StepRunner | None:
    """The version's step runner with ``threads`` (default :func:`step_threads`), or None (logged once) when it
    cannot have one.

    int8 stays on the whole-sequence path: dynamic quantization scales activations by the
    whole input tensor, so a row's answer would depend on its batch-mates.
    """
    reason = None
    if settings.precision != "fp32":
        reason = f"--precision {settings.precision}: the step graph is fp32 only"
    runner = None
    if reason is None:
        options = session_options(dataclasses.replace(settings, workers=1,
                                                      intra_op_threads=threads or step_threads(settings)))
        runner = open_step_runner(model, options, providers_for(settings))
        if runner is None:
            reason = "the version has no step graph (metadata.json has no 'steps' section; re-export it)"
    if reason is not None:
        log.warning("--batching steps falls back to whole-sequence batching",
                    extra={"model": model.name, "version": model.version, "reason": reason})
    return runner


def check_agreement(steps: StepRunner, whole: ModelRunner, ids: Sequence[Sequence[int]], step_tokens: int) -> None:
    """Refuse a version whose step graph and whole graph disagree on ``ids`` (RepositoryError)."""
    input_ids, lengths = pad_batch(ids, whole.model.pad_id)
    gap = float(np.abs(steps.score(ids, step_tokens) - whole.run(input_ids, lengths)).max())
    if not gap <= AGREEMENT:  # NaN fails too
        raise RepositoryError(f"{steps.spec.step_path}: the step graph's probabilities differ from model.onnx's "
                              f"by {gap:.2e} on the probe texts (at most {AGREEMENT}); re-export the version")


@dataclass(frozen=True)
class PreparedSteps:
    """A version's step sessions, checked and warmed, and the measured cost of its steps (for the step size).

    ``runner``: the session with every step thread (the agreement check, Explain alone);
    ``sessions``: what the scheduler steps (``runner`` for batches, the faster session for one row).
    """

    runner: StepRunner
    sessions: StepSessions
    cost: RunCost = DEFAULT_RUN_COST


def prepare_steps(model: ModelVersion, settings: Settings, whole: ModelRunner,
                  tokenizer: Tokenizer, probe_texts: Sequence[str]) -> PreparedSteps | None:
    """Blocking: open, check against ``whole`` on ``probe_texts``, warm and measure the version's step graph.

    None (logged once) when the version stays on the whole path; raises
    :class:`~runtime.repository.RepositoryError` when its step graph disagrees with ``model.onnx``.
    """
    runner = load_step_runner(model, settings)
    if runner is None:
        return None
    ids = encode_texts(tokenizer, list(probe_texts), model.max_tokens, model.head_tokens, model.unk_id)
    check_agreement(runner, whole, ids, settings.step_tokens)
    if not settings.warmup:
        return PreparedSteps(runner, StepSessions(runner))
    threads = step_threads(settings)
    one_thread = threads > 1 and settings.device == "cpu"  # a lone row may read faster on one thread
    sessions = StepSessions(runner, load_step_runner(model, settings, threads=1) if one_thread else None)
    rows, k = settings.max_active_rows, settings.step_tokens
    for batch in sorted({1, min(8, rows), rows}):  # first runs allocate and pick kernels, in every session
        warm, lengths = np.full((batch, k), model.unk_id, dtype=np.int64), np.full(batch, k, dtype=np.int64)
        for session in sessions.sessions():
            session.head(session.step(warm, lengths, session.initial_state(batch)), lengths)
    one_row = np.full((1, min(128, model.max_tokens)), model.unk_id, dtype=np.int64)
    sessions.single = faster_for_one_row(sessions.sessions(), one_row)
    prepared = PreparedSteps(runner, sessions, measure_step_cost(runner, model.unk_id, min(rows, 16), k))
    log.info("step graph ready", extra={"model": model.name, "version": model.version, "step_tokens": k,
                                        "max_active_rows": rows, "step_loops": step_plan(settings)[0],
                                        "step_threads": threads,
                                        "one_row_step_threads": threads if sessions.single is runner else 1,
                                        "step_cost_us": {f: round(getattr(prepared.cost, f) * 1e6, 2)
                                                         for f in ("per_run", "per_step", "per_row_step")}})
    return prepared


def measure_step_cost(runner: StepRunner, unk_id: int, rows: int, max_step_tokens: int,
                      repeats: int = 3) -> RunCost:
    """Fit a :class:`~runtime.run_cost.RunCost` to steps of 1 and ``rows`` rows (best of ``repeats``; a few ms)."""
    def best_time(batch: int, length: int) -> float:
        ids, lengths = np.full((batch, length), unk_id, dtype=np.int64), np.full(batch, length, dtype=np.int64)
        state = runner.initial_state(batch)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            runner.step(ids, lengths, state)
            times.append(time.perf_counter() - started)
        return min(times)

    return fit_run_cost(best_time, rows, max(1, max_step_tokens // 8), max_step_tokens)


class Servable(Protocol):
    """What the steps path reads of the core's loaded model (``serve.engine.core.LoadedModel`` is one)."""

    @property
    def model(self) -> ModelVersion: ...

    @property
    def steps(self) -> PreparedSteps | None: ...

    @property
    def tokenizer(self) -> Tokenizer: ...

    @property
    def vocabulary(self) -> Vocabulary: ...


class _QueueDepths:
    """One loop's observer: steps go straight through; queue depth is reported summed over every loop."""

    def __init__(self, observer: SchedulerObserver, depths: dict[int, int], index: int) -> None:
        self._observer, self._depths, self._index = observer, depths, index

    def queue_depth(self, units: int) -> None:
        self._depths[self._index] = units  # one writer per key (its loop); the sum may lag by one update
        self._observer.queue_depth(sum(self._depths.values()))

    def step_done(self, record: StepRecord) -> None:
        self._observer.step_done(record)


def allot(count: int, loads: Sequence[int], rooms: Sequence[int]) -> list[int]:
    """How many of ``count`` texts each loop takes: one at a time to the loop with the least load (its rows,
    active and queued, plus what it was given), among those with room left; ties to the earlier loop.

    Raises :class:`~serve.ops.errors.Overloaded` when the loops' rooms add up to less than ``count``.
    """
    if count > sum(rooms):
        raise Overloaded(f"queue full ({count} texts asked, room for {sum(rooms)}); retry with backoff")
    given = [0] * len(loads)
    heap = [(load, i) for i, (load, room) in enumerate(zip(loads, rooms, strict=True)) if room > 0]
    heapq.heapify(heap)
    for _ in range(count):
        load, i = heapq.heappop(heap)
        given[i] += 1
        if given[i] < rooms[i]:
            heapq.heappush(heap, (load + 1, i))
    return given


def share_out(sizes: Sequence[int]) -> list[list[int]]:
    """Consecutive index ranges of the given ``sizes`` (the request's texts 0..sum-1, in order)."""
    bounds = np.cumsum([0, *sizes])
    return [list(range(bounds[i], bounds[i + 1])) for i in range(len(sizes))]


class StepBatching:
    """Routes requests to the step loops (schedulers) of the model version they were admitted under.

    Texts are tokenized before they join a queue, off the scheduler threads (which only run
    steps), once: the same pass gives the known-word fractions. A request of at most
    :data:`INLINE_TOKENIZE_CHARS` characters is tokenized on the event loop, a larger one in a
    worker thread.
    """

    def __init__(self, settings: Settings, observer: SchedulerObserver) -> None:
        self._settings = settings
        self._observer = observer
        self._depths: dict[int, int] = {}  # queued texts of each serving loop, by the key given at creation
        self._depth_keys: dict[StepScheduler[np.ndarray], int] = {}
        self._next_key = 0
        self._schedulers: dict[Servable, list[StepScheduler[np.ndarray]]] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        # Requests admitted under a version, still preparing their rows (tokenizing) before they queue:
        # a version's scheduler retires only once none is left, so a hot reload refuses none of them.
        self._preparing: collections.Counter[StepScheduler[np.ndarray]] = collections.Counter()

    def serve(self, loaded: Servable) -> None:
        """On the loop: new requests are for ``loaded``; the schedulers of older versions drain and stop."""
        for old in [key for key in self._schedulers if key is not loaded]:
            task = asyncio.get_running_loop().create_task(self._retire(old, self._schedulers.pop(old)))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        if loaded not in self._schedulers and loaded.steps is not None:
            self._schedulers[loaded] = [self._scheduler(loaded, i) for i in range(step_plan(self._settings)[0])]

    async def _retire(self, loaded: Servable, schedulers: list[StepScheduler[np.ndarray]]) -> None:
        while any(self._preparing[s] for s in schedulers):  # milliseconds: tokenizing the last requests admitted
            await asyncio.sleep(0.001)
        await asyncio.gather(*(scheduler.close(drain=True) for scheduler in schedulers))
        for scheduler in schedulers:  # drained: nothing of theirs is queued any more
            self._depths.pop(self._depth_keys.pop(scheduler), None)

    def _scheduler(self, loaded: Servable, index: int) -> StepScheduler[np.ndarray]:
        model, steps, s = loaded.model, loaded.steps, self._settings
        assert steps is not None
        policy = StepPolicy(s.max_active_rows, s.step_tokens, steps.cost)
        key, self._next_key = self._next_key, self._next_key + 1
        self._depths[key] = 0
        loops = step_plan(s)[0]  # --max-queue-size bounds the server's queue: each loop holds its share
        scheduler = StepScheduler(steps.sessions, list, policy=policy, max_queue_size=-(-s.max_queue_size // loops),
                                  observer=_QueueDepths(self._observer, self._depths, key),
                                  name=f"steps_v{model.version}_{index}")
        self._depth_keys[scheduler] = key
        return scheduler

    def _place(self, loops: Sequence[StepScheduler[np.ndarray]], count: int) -> list[int]:
        """How many of ``count`` texts each of ``loops`` takes now (:func:`allot`). Raises the server-wide
        :class:`~serve.ops.errors.Overloaded` (each loop holds a share of --max-queue-size), or
        ModelNotReady once the loops are closed."""
        try:
            return allot(count, [s.active_rows + s.queued_units for s in loops], [s.room for s in loops])
        except Overloaded:
            loops[0].check_room(0)  # a closed loop says so (ModelNotReady) rather than "full"
            waiting = sum(s.queued_units for s in loops)
            raise Overloaded(f"queue full ({waiting} of {self._settings.max_queue_size} texts waiting, {count} "
                             "more asked); retry with backoff") from None

    def _least_loaded(self, loaded: Servable) -> StepScheduler[np.ndarray]:
        """Of ``loaded``'s loops, one with queue room and the fewest rows (active and queued)."""
        return min(self._schedulers[loaded], key=lambda s: (s.room == 0, s.active_rows + s.queued_units))

    async def submit(self, loaded: Servable, texts: list[str],
                     deadline: float | None) -> tuple[np.ndarray, list[float]]:
        """P(positive) float32 [len(texts)] from ``loaded``'s scheduler (see :meth:`StepScheduler.submit`),
        and each text's known-word fraction."""
        every = self._schedulers[loaded]
        self._place(every, len(texts))  # refuse before tokenizing what the queues cannot take
        model = loaded.model
        for scheduler in every:
            self._preparing[scheduler] += 1
        try:
            encode = functools.partial(encode_for_model, loaded.tokenizer, loaded.vocabulary, texts, model.max_tokens,
                                       model.head_tokens)
            inputs = (encode() if sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS
                      else await asyncio.get_running_loop().run_in_executor(None, encode))
            ids, known = [], []
            for i, x in enumerate(inputs):
                if x is None:  # the core's validation lets no such text through
                    raise RuntimeError(f"text {i} of the request has nothing to read but was admitted")
                ids.append(np.asarray(x.ids, dtype=np.int64))
                known.append(x.known_word_fraction)
            # Placed again now: other requests may have queued meanwhile. From here to the enqueues nothing
            # else runs on the event loop and the loops only take texts off their queues, so the places hold.
            given = self._place(every, len(texts))
            loops = [scheduler for scheduler, n in zip(every, given, strict=True) if n]
            parts = share_out([n for n in given if n])
            answers = enqueue_parts(loops, parts, ids, deadline)
        finally:
            for scheduler in every:
                self._preparing[scheduler] -= 1
        if len(answers) == 1:
            return await answers[0], known
        return await gather_parts(answers, len(texts), parts), known

    async def submit_plans(self, loaded: Servable, prepare: Callable[[], tuple[Sequence[RowPlan], int, R]],
                           deadline: float | None) -> tuple[np.ndarray, R]:
        """Run the row plans that ``prepare()`` (called in a worker thread) returns, with ``slots`` answers, on
        ``loaded``'s scheduler among the predictions' rows; returns the answers and what ``prepare`` returned
        third (Explain's job). Raises what ``prepare`` raises, and as :meth:`StepScheduler.submit_plans`."""
        scheduler = self._least_loaded(loaded)
        self._preparing[scheduler] += 1
        try:
            roots, slots, job = await asyncio.get_running_loop().run_in_executor(None, prepare)
            answer = scheduler.enqueue_plans(roots, slots, deadline)
        finally:
            self._preparing[scheduler] -= 1
        return await answer, job

    def serves_steps(self, loaded: Servable) -> bool:
        """Whether ``loaded`` is served by step loops here."""
        return loaded in self._schedulers

    async def close(self) -> None:
        """Shutdown: every loop finishes its admitted requests and refuses queued ones."""
        schedulers = [scheduler for loops in self._schedulers.values() for scheduler in loops]
        self._schedulers = {}
        await asyncio.gather(*(scheduler.close() for scheduler in schedulers), *self._retiring)


def enqueue_parts(loops: Sequence[StepScheduler[np.ndarray]], parts: Sequence[Sequence[int]],
                  ids: Sequence[np.ndarray], deadline: float | None) -> list[PendingAnswer]:
    """Queue part ``i`` of ``ids`` on loop ``i`` now. If a loop refuses its part (its queue filled up while the
    texts were tokenized), the parts already queued are withdrawn and the refusal is raised."""
    answers: list[PendingAnswer] = []
    try:
        for scheduler, part in zip(loops, parts, strict=True):
            answers.append(scheduler.enqueue([ids[i] for i in part], deadline))
    except BaseException:
        for answer in answers:
            answer.withdraw()
        raise
    return answers


async def gather_parts(answers: Sequence[PendingAnswer], count: int, parts: Sequence[Sequence[int]]) -> np.ndarray:
    """Await every part's answer; P(positive) float32 [count] in the request's order. The first part to fail
    (or the caller's cancellation) withdraws the others: their texts leave the queues and active sets."""
    futures = [answer.future for answer in answers]
    try:
        await asyncio.wait(futures, return_when=asyncio.FIRST_EXCEPTION)
        for future in futures:  # a failed part fails the request now, whatever the others are doing
            if future.done() and not future.cancelled() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
        results = [future.result() for future in futures]
    except BaseException:
        for answer in answers:
            answer.withdraw()
        raise
    out = np.empty(count, dtype=np.float32)
    for part, result in zip(parts, results, strict=True):
        out[part] = result
    return out
