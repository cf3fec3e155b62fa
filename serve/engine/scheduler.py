"""Step-level (continuous) batching: which rows read their next tokens in the next model step.

The batcher's successor for models exported with a step graph (:mod:`runtime.step_runner`),
free of gRPC and of the model's math, after vLLM's scheduler / model-runner split. One
scheduler thread keeps an *active set* of rows (one row per text, with its carried state);
each iteration is one step:

1. Rows of requests that were cancelled, failed or whose deadline passed leave the active set
   (a client that gives up frees its rows at the next step boundary, its queued texts at once).
2. Free places in the active set (``max_active_rows``) are filled from the queue in round
   robin: each waiting request in turn (newcomers join the end of the ring) gets one place
   for one of its texts, and one request holds at most :attr:`StepPolicy.rows_per_request` places, so a
   bulk request or a batch of very long reviews cannot make a short single request wait for
   them, only for the current step (or, with every place taken, for the first row to end).
   Admitted texts are tokenized together (``encode``) and join with the model's initial state.
3. The step size ``K`` is chosen (:class:`StepPolicy`), every active row reads up to ``K``
   more tokens in one call of ``model.step``, rows that reach their end get their answer from
   ``model.head`` and leave; a request is answered when its last text is.

Besides texts, a request may bring :class:`~runtime.row_plan.RowPlan` s (:meth:`StepScheduler.submit_plans`,
Explain): rows that pause at given positions for a snapshot (the head's answer there) or to
branch (a new row starting from their state, which joins the request's waiting rows, ahead
of its other texts). They take turns and places like any other rows.

The queue is bounded in texts: a submit that would overflow it raises
:class:`~serve.ops.errors.Overloaded` at once (RESOURCE_EXHAUSTED at the edge), as the batcher does.
If a step fails, every request with a row in it gets the exception. Futures are touched only
on the event loop; the thread posts results with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import numpy as np

from runtime.row_plan import RowPlan, Snapshot, State, StepModel, next_pause
from runtime.run_cost import RunCost
from serve.ops.errors import DeadlineExpired, ModelNotReady, Overloaded

log = logging.getLogger("serve.engine.scheduler")
T = TypeVar("T")


@dataclass(frozen=True)
class StepRecord:
    """What one step did: rows in it, its size ``K``, real tokens read (the rest is padding), seconds."""

    rows: int
    step_tokens: int
    real_tokens: int
    joins: int  # rows that joined the active set at this step
    finished: int  # rows that got their answer and left
    seconds: float  # model time of the step and head calls
    requests: int = 0  # distinct requests with a row in the step
    encode_seconds: float = 0.0  # tokenizing the rows that joined
    queue_seconds: tuple[float, ...] = ()  # waits of the requests whose first text joined at this step

    @property
    def padded_tokens(self) -> int:
        return self.rows * self.step_tokens


class SchedulerObserver(Protocol):
    """Receives the scheduler's measurements (the metrics module implements it); called from its thread."""

    def queue_depth(self, units: int) -> None: ...

    def step_done(self, record: StepRecord) -> None: ...


@dataclass(frozen=True)
class StepPolicy:
    """How many rows run together and how many tokens each step reads.

    One request holds at most :attr:`rows_per_request` rows, so a bulk request always leaves
    places for single ones. ``max_step_tokens`` bounds a step, and so how long a newly admitted text waits to join
    (one step). Within that bound, ``K`` is the one of the rows' remaining lengths that reads
    the most real tokens per modelled second (``cost``): a step that stops where rows end
    pads nothing, a longer one saves calls. A row alone with nobody waiting reads to its end
    in one step, as the whole-sequence path would.
    """

    max_active_rows: int = 32
    max_step_tokens: int = 32
    cost: RunCost = field(default_factory=lambda: RunCost(40e-6, 6e-6, 6e-6))

    def __post_init__(self) -> None:
        if self.max_active_rows < 1 or self.max_step_tokens < 1:
            raise ValueError(f"max_active_rows and max_step_tokens must be >= 1, got {self}")

    @property
    def rows_per_request(self) -> int:
        """Most rows one request may hold: a quarter of the places stays open for other requests."""
        return max(1, self.max_active_rows - self.max_active_rows // 4)

    def step_tokens(self, remaining: np.ndarray, others_waiting: bool) -> int:
        """``K`` for rows with ``remaining`` int64 [B] (each >= 1) tokens left to read."""
        longest = int(remaining.max())
        if len(remaining) == 1 and not others_waiting:
            return longest
        candidates = np.unique(np.minimum(remaining, self.max_step_tokens))
        real = np.minimum(remaining[None, :], candidates[:, None]).sum(axis=1)
        seconds = np.array([self.cost.seconds(len(remaining), int(k)) for k in candidates])
        return int(candidates[int(np.argmax(real / seconds))])


@dataclass(eq=False)
class _Request(Generic[T]):
    items: Sequence[T]
    deadline: float | None
    future: asyncio.Future[np.ndarray] = field(repr=False)
    enqueued: float
    slots: int  # answers it waits for: one per text, or the plans' slots
    # Rows waiting for a place: an item index (tokenized when it joins) or a plan with the state it starts from.
    waiting: collections.deque[int | tuple[RowPlan, State | None]] = field(default_factory=collections.deque)
    results: np.ndarray = field(init=False, repr=False)
    active: int = 0  # rows in the active set
    answered: int = 0  # slots filled
    started: bool = False  # a row of it has joined (its queue wait is over)
    in_ring: bool = False
    closed: bool = False  # cancelled, expired or failed: its rows leave at the next step

    def __post_init__(self) -> None:
        self.results = np.empty(self.slots, dtype=np.float32)


@dataclass(eq=False)
class _Row:
    request: _Request
    plan: RowPlan
    read: int = 0

    def next_pause(self) -> int:
        """Tokens of the plan's ids read at the row's next stop or its end."""
        return next_pause(self.plan, self.read)


class PendingAnswer:
    """A queued request's answer (:meth:`StepScheduler.enqueue`): ``await`` it for P(positive) float32 [n].

    Cancelling the awaiting task, or :meth:`withdraw`, frees the request's queued texts at once
    and its rows at the next step boundary.
    """

    def __init__(self, scheduler: StepScheduler, request: _Request) -> None:
        self._scheduler = scheduler
        self._request = request

    @property
    def future(self) -> asyncio.Future[np.ndarray]:
        """The answer's future (on the event loop that queued it); await the PendingAnswer to withdraw on cancel."""
        return self._request.future

    def withdraw(self) -> None:
        """Give up on the answer (idempotent; nothing happens to a request already answered)."""
        self._scheduler._withdraw(self._request)
        self._request.future.cancel()  # an answer or error that arrives later is dropped, never logged

    def __await__(self) -> Generator[object, None, np.ndarray]:
        try:
            return (yield from self._request.future.__await__())
        except asyncio.CancelledError:
            self.withdraw()
            raise


class StepScheduler(Generic[T]):
    """Scores items (texts) by step-level batching on ``model``; ``await submit(items)`` -> P(positive) [n].

    ``encode(items) -> id lists`` (each with at least one id) runs on the scheduler thread, on
    the texts admitted at a step, together.
    """

    def __init__(self, model: StepModel, encode: Callable[[list[T]], Sequence[Sequence[int]]], *,
                 policy: StepPolicy, max_queue_size: int, observer: SchedulerObserver | None = None,
                 name: str = "step_scheduler", clock: Callable[[], float] = time.monotonic) -> None:
        self._model = model
        self._encode = encode
        self._policy = policy
        self._max_queue_size = max_queue_size
        self._observer = observer
        self._name = name
        self._clock = clock  # time.monotonic, or a test's clock
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        # Requests with texts waiting for a place, in round-robin order: one text per turn.
        self._ring: collections.deque[_Request[T]] = collections.deque()
        self._queued_units = 0
        self._rows: list[_Row] = []  # the active set, aligned with self._state's rows
        self._state: State = model.initial_state(0)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._drain = True
        self._encode_seconds = 0.0  # of the rows joining at the coming step

    @property
    def queued_units(self) -> int:
        """Texts waiting for a place in the active set."""
        return self._queued_units

    @property
    def room(self) -> int:
        """Texts the queue can take now (``max_queue_size`` minus :attr:`queued_units`)."""
        return max(0, self._max_queue_size - self._queued_units)

    @property
    def active_rows(self) -> int:
        """Rows in the active set now (read from the scheduler thread's last step)."""
        return len(self._rows)

    def check_room(self, items: int) -> None:
        """Raise :class:`~serve.ops.errors.Overloaded` (or ModelNotReady once closed) if ``items`` more texts
        would not fit the queue now: lets a caller refuse before preparing them (:meth:`submit` checks again)."""
        with self._lock:
            self._check_room(items)

    def _check_room(self, items: int) -> None:
        if self._closed:
            raise ModelNotReady("the server is shutting down")
        if self._queued_units + items > self._max_queue_size:
            raise Overloaded(f"queue full ({self._queued_units} of {self._max_queue_size} texts waiting, {items} more "
                             "asked); retry with backoff")

    async def submit(self, items: Sequence[T], deadline: float | None = None) -> np.ndarray:
        """Score ``items``; returns P(positive) float32 [len(items)] in their order.

        ``deadline``: a :func:`time.monotonic` instant after which the answer is not wanted
        (:class:`~serve.ops.errors.DeadlineExpired`). Raises :class:`~serve.ops.errors.Overloaded` when
        the queue cannot take ``len(items)`` more texts, :class:`~serve.ops.errors.ModelNotReady`
        once closed. Cancelling the caller frees the request's queued texts and rows.
        """
        if not items:
            return np.empty(0, dtype=np.float32)
        return await self.enqueue(items, deadline)

    def enqueue(self, items: Sequence[T], deadline: float | None = None) -> PendingAnswer:
        """:meth:`submit` in two halves: queues ``items`` (1 or more) now, raising as :meth:`submit` does;
        awaiting the :class:`PendingAnswer` returned gives the answers."""
        loop = asyncio.get_running_loop()
        request = _Request(items, deadline, loop.create_future(), self._clock(), len(items),
                           collections.deque(range(len(items))))
        self._add(request, loop)
        return PendingAnswer(self, request)

    def enqueue_plans(self, roots: Sequence[RowPlan], slots: int, deadline: float | None = None) -> PendingAnswer:
        """Queue row plans (:mod:`runtime.row_plan`) now, to run among the other requests' rows; awaiting
        the :class:`PendingAnswer` returned gives their answers, float32 [slots]. Each root counts as one text
        against the queue bound; its branches do not (they are admitted work). Errors and
        cancellation as :meth:`submit`.
        """
        loop = asyncio.get_running_loop()
        request: _Request[T] = _Request((), deadline, loop.create_future(), self._clock(), slots,
                                        collections.deque((plan, None) for plan in roots))
        self._add(request, loop)
        return PendingAnswer(self, request)

    async def submit_plans(self, roots: Sequence[RowPlan], slots: int, deadline: float | None = None) -> np.ndarray:
        """:meth:`enqueue_plans` and wait for the answers."""
        return await self.enqueue_plans(roots, slots, deadline)

    def _add(self, request: _Request[T], loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._check_room(len(request.waiting))
            if self._thread is None:  # started lazily, to hand results back to the caller's loop
                self._loop = loop
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._ring.append(request)
            request.in_ring = True
            self._queued_units += len(request.waiting)
            self._report_depth()
            self._wake.notify()

    async def close(self, drain: bool = False) -> None:
        """Refuse new work, then stop the thread once the remaining work is done.

        ``drain``: finish every admitted request, queued ones included (a model being
        replaced); otherwise requests with texts still queued get
        :class:`~serve.ops.errors.ModelNotReady` and only fully admitted ones finish (shutdown).
        """
        with self._lock:
            self._closed = True
            self._drain = drain
            self._wake.notify_all()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        await asyncio.sleep(0)  # let the last answers (already posted) reach their callers

    def _withdraw(self, request: _Request[T]) -> None:
        """The caller gave up: drop its queued texts now, its rows at the next step boundary."""
        with self._lock:
            request.closed = True
            self._unqueue(request)

    def _unqueue(self, request: _Request[T]) -> None:
        """Under the lock: take ``request`` out of the queue, returning its waiting rows' units."""
        if request.in_ring:
            self._ring.remove(request)
            request.in_ring = False
        if request.waiting:
            self._queued_units -= len(request.waiting)
            request.waiting.clear()
            self._report_depth()

    def _report_depth(self) -> None:
        if self._observer is not None:
            self._observer.queue_depth(self._queued_units)

    # -- the scheduler thread
    def _run(self) -> None:
        while True:
            with self._lock:
                self._wake.wait_for(lambda: self._rows or self._ring or self._closed)
                if self._closed and not self._drain:
                    self._refuse_queued()
                if self._closed and not (self._rows or self._ring):
                    return
            answers: list[tuple[_Request[T], np.ndarray | BaseException]] = []
            self._drop_closed_rows(answers)  # first, so that their places go to the queue now
            with self._lock:
                admitted, queue_seconds = self._admit(self._policy.max_active_rows - len(self._rows), answers)
                others_waiting = bool(self._ring)
            self._join(admitted, answers)
            if self._rows:
                self._step(others_waiting, len(admitted), queue_seconds, answers)
            if answers:
                self._post(answers)

    def _admit(self, free: int, answers: list[tuple[_Request[T], np.ndarray | BaseException]]
               ) -> tuple[list[tuple[_Request[T], int | tuple[RowPlan, State | None]]], tuple[float, ...]]:
        """Under the lock: up to ``free`` (request, waiting row) pairs, one row per request per turn (round robin).

        Requests met whose deadline has passed are closed, with their error added to ``answers``.
        """
        chosen: list[tuple[_Request[T], int | tuple[RowPlan, State | None]]] = []
        waits: list[float] = []
        now = self._clock()
        cap = self._policy.rows_per_request
        while free > 0:
            request = self._next_candidate(cap)
            if request is None:
                break
            if request.closed:
                continue
            if request.deadline is not None and request.deadline <= now:
                self._queued_units -= len(request.waiting)
                request.waiting.clear()
                request.closed = True
                answers.append((request, DeadlineExpired(f"deadline passed after {now - request.enqueued:.3f} s "
                                                         "waiting for the model")))
                continue
            if not request.started:
                waits.append(now - request.enqueued)
                request.started = True
            chosen.append((request, request.waiting.popleft()))
            request.active += 1
            self._queued_units -= 1
            free -= 1
            if request.waiting:
                self._ring.append(request)
                request.in_ring = True
        if chosen:
            self._report_depth()
        return chosen, tuple(waits)

    def _next_candidate(self, cap: int) -> _Request[T] | None:
        """Under the lock: the next request in turn that holds fewer than ``cap`` rows (taken off the ring)."""
        for _ in range(len(self._ring)):
            request = self._ring.popleft()
            request.in_ring = False
            if request.active < cap or request.closed:
                return request
            self._ring.append(request)
            request.in_ring = True
        return None

    def _refuse_queued(self) -> None:
        """Under the lock, closing without drain: requests with queued texts fail now (those with rows
        in the active set already keep their waiting rows: branches of admitted work)."""
        refused = [r for r in self._ring if not r.closed and not r.started]
        if not refused:
            return
        for request in refused:
            self._unqueue(request)
            request.closed = True
        self._post([(r, ModelNotReady("the server is shutting down")) for r in refused])

    def _drop_closed_rows(self, answers: list[tuple[_Request[T], np.ndarray | BaseException]]) -> None:
        """Rows of cancelled or failed requests, and of requests whose deadline passed, leave now."""
        now = self._clock()
        for row in self._rows:
            request = row.request
            if not request.closed and request.deadline is not None and request.deadline <= now:
                request.closed = True
                with self._lock:
                    self._unqueue(request)
                answers.append((request, DeadlineExpired(f"deadline passed after {now - request.enqueued:.3f} s, "
                                                         f"with {request.answered} of {request.slots} "
                                                         f"{'texts scored' if request.items else 'answers ready'}")))
        self._compact()

    def _join(self, admitted: list[tuple[_Request[T], int | tuple[RowPlan, State | None]]],
              answers: list[tuple[_Request[T], np.ndarray | BaseException]]) -> None:
        """Tokenize the admitted texts together and add every admitted row to the active set with its state."""
        if not admitted:
            return
        started = time.perf_counter()
        texts = [(request, entry) for request, entry in admitted if isinstance(entry, int)]
        try:
            encoded = self._encode([request.items[index] for request, index in texts]) if texts else []
            made = iter(encoded)
            rows, states = [], []
            for request, entry in admitted:
                if isinstance(entry, int):
                    ids = np.asarray(next(made), dtype=np.int64)
                    if len(ids) == 0:
                        raise ValueError("encode returned an empty id list; every text needs at least one token")
                    rows.append(_Row(request, RowPlan(ids, entry)))
                    states.append(None)
                else:
                    rows.append(_Row(request, entry[0]))
                    states.append(entry[1])
        except Exception as exc:
            for request, _ in admitted:
                request.active -= 1
            self._fail({request for request, _ in admitted}, exc, answers)
            return
        self._encode_seconds = time.perf_counter() - started
        fresh = self._model.initial_state(len(rows))
        joining = {name: np.concatenate([value[i:i + 1] if state is None else state[name]
                                         for i, state in enumerate(states)])
                   for name, value in fresh.items()}
        self._state = {k: np.concatenate([v, joining[k]]) for k, v in self._state.items()}
        self._rows.extend(rows)

    def _step(self, others_waiting: bool, joins: int, queue_seconds: tuple[float, ...],
              answers: list[tuple[_Request[T], np.ndarray | BaseException]]) -> None:
        """One model step on every active row; rows that pause get the head's answer (or branch), rows
        that end get it and leave."""
        rows = self._rows
        pauses = np.fromiter((row.next_pause() for row in rows), dtype=np.int64, count=len(rows))
        reads = np.fromiter((row.read for row in rows), dtype=np.int64, count=len(rows))
        remaining = pauses - reads
        k = self._policy.step_tokens(remaining, others_waiting)
        step_lengths = np.minimum(remaining, k)
        input_ids = np.full((len(rows), k), self._model.pad_id, dtype=np.int64)
        for i, row in enumerate(rows):
            input_ids[i, :step_lengths[i]] = row.plan.ids[row.read:row.read + step_lengths[i]]
        started = time.perf_counter()
        heads: list[tuple[int, int, _Request[T], int]] = []  # (row, length, request, slot)
        branches: list[tuple[_Request[T], RowPlan, int]] = []  # (request, plan, row whose state it takes)
        ending: list[int] = []
        try:
            self._state = self._model.step(input_ids, step_lengths, self._state)
            for i, row in enumerate(rows):
                row.read += int(step_lengths[i])
                if row.read == len(row.plan.ids):
                    ending.append(i)
                    heads.append((i, row.plan.offset + row.read, row.request, row.plan.slot))
                    continue
                for action in row.plan.stops.get(row.read, ()) if row.read == pauses[i] else ():
                    if isinstance(action, Snapshot):
                        heads.append((i, row.plan.offset + row.read, row.request, action.slot))
                    else:
                        branches.append((row.request, action, i))
            probabilities = np.empty(0, dtype=np.float32)
            if heads:
                at = np.array([h[0] for h in heads], dtype=np.int64)
                probabilities = self._model.head({n: v[at] for n, v in self._state.items()},
                                                 np.array([h[1] for h in heads], dtype=np.int64))
        except Exception as exc:
            log.exception("model step failed", extra={"rows": len(rows), "step_tokens": k})
            self._fail({row.request for row in rows}, exc, answers)
            self._rows, self._state = [], self._model.initial_state(0)
            return
        seconds = time.perf_counter() - started
        for (_, _, request, slot), probability in zip(heads, probabilities.tolist(), strict=True):
            request.results[slot] = probability
            request.answered += 1
            if request.answered == request.slots:
                answers.append((request, request.results))
        if branches:
            self._branch(branches)
        if ending:
            for i in ending:
                rows[i].request.active -= 1
            keep = np.setdiff1d(np.arange(len(rows)), ending)
            self._rows = [rows[i] for i in keep]
            self._state = {n: v[keep] for n, v in self._state.items()}
        if self._observer is not None:
            try:  # a failing observer must not cost the callers their answers
                self._observer.step_done(StepRecord(
                    rows=len(rows), step_tokens=k, real_tokens=int(step_lengths.sum()), joins=joins,
                    finished=len(ending), seconds=seconds, queue_seconds=queue_seconds,
                    requests=len({id(row.request) for row in rows}), encode_seconds=self._encode_seconds))
            except Exception:
                log.exception("step observer failed")
        self._encode_seconds = 0.0

    def _branch(self, branches: list[tuple[_Request[T], RowPlan, int]]) -> None:
        """New rows from the state of the rows that reached their branch points: first in their request's turn."""
        with self._lock:
            for request, plan, i in reversed(branches):  # appendleft: keep the plans' order
                if request.closed:
                    continue
                request.waiting.appendleft((plan, {n: v[i:i + 1].copy() for n, v in self._state.items()}))
                self._queued_units += 1
                if not request.in_ring:
                    self._ring.appendleft(request)
                    request.in_ring = True
            self._report_depth()

    def _fail(self, requests: set[_Request[T]], exc: BaseException,
              answers: list[tuple[_Request[T], np.ndarray | BaseException]]) -> None:
        """Close ``requests`` with ``exc``: their queued texts and (next step) rows go."""
        with self._lock:
            for request in requests:
                request.closed = True
                self._unqueue(request)
        answers.extend((request, exc) for request in requests)
        self._compact()

    def _compact(self) -> None:
        """Drop the active rows of closed requests, with their state."""
        keep = [i for i, row in enumerate(self._rows) if not row.request.closed]
        if len(keep) < len(self._rows):
            self._rows = [self._rows[i] for i in keep]
            self._state = {k: v[keep] for k, v in self._state.items()}

    def _post(self, answers: list[tuple[_Request[T], np.ndarray | BaseException]]) -> None:
        loop = self._loop
        assert loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is gone (interpreter shutdown): nobody is waiting
            loop.call_soon_threadsafe(self._answer, answers)

    @staticmethod
    def _answer(answers: list[tuple[_Request[T], np.ndarray | BaseException]]) -> None:
        """On the loop: resolve the futures of answered, failed and expired requests."""
        for request, outcome in answers:
            if request.future.done():  # its caller gave up
                continue
            if isinstance(outcome, BaseException):
                request.future.set_exception(outcome)
            else:
                request.future.set_result(outcome)
