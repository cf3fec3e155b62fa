"""An asyncio dynamic batcher, independent of gRPC and of the model.

Callers ``await batcher.submit(item, size)``; ``max_concurrent`` worker threads take queued
items, up to ``max_batch_size`` units (texts) at a time, and call ``process`` on them, so the
event loop stays free while the model runs. A worker that finishes a batch takes the next
one itself, without a round trip through the event loop: under load the model never waits
for the loop, which is busy answering the batch just done. Policy:

* An idle worker takes a new item at once: a lone request never waits out a window.
* Items that arrive while every worker is busy are coalesced into the next batch; with
  ``max_delay_s > 0`` that batch may also wait that long to fill up (only under load).
* A batch always starts with the oldest waiting item, so nothing waits behind later
  arrivals for long. It is filled in arrival order, or, given a ``key`` (a text length),
  with the waiting items whose key is nearest the oldest one's: similar lengths pad less.
* Items queued together by :meth:`Batcher.submit_all` (the parts of one large request) may
  run on every worker at once, but not ahead of other callers: while one of its parts is
  being processed, a free worker starts its batch with the oldest item of another caller,
  if any waits, and fills it without that request's parts. One large request cannot take
  every worker from the requests behind it.
* The queue is bounded in units: a submit that would overflow it raises
  :class:`~serve.ops.errors.Overloaded` at once.
* Items whose deadline has passed, or whose caller gave up, are dropped before ``process``;
  a caller that gives up frees its queue units at once.
* If ``process`` raises, every item of that batch gets the exception.

Threading: the queue is guarded by one lock. Futures are touched only on the event loop;
workers hand results back with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from serve.ops.errors import DeadlineExpired, ModelNotReady, Overloaded

log = logging.getLogger("serve.batcher")
T = TypeVar("T")
R = TypeVar("R")
# How many waiting items (from the oldest) a batch is chosen among: bounds the work per
# batch whatever the queue's length.
SCAN_ITEMS = 64


class BatchObserver(Protocol):
    """Receives the batcher's measurements (the metrics module implements it); called from any thread."""

    def queue_depth(self, units: int) -> None: ...

    def batch_done(self, units: int, queue_seconds: Sequence[float], compute_seconds: float,
                   cpu_seconds: float) -> None: ...


@dataclass(eq=False)
class _Pending(Generic[T, R]):
    item: T
    size: int
    deadline: float | None
    enqueued: float
    key: float
    future: asyncio.Future[R] = field(repr=False)
    group: int | None = None  # the submit_all call it came from


class Batcher(Generic[T, R]):
    """Coalesces concurrent submissions into calls of ``process(items) -> results`` (same order)."""

    def __init__(self, process: Callable[[list[T]], Sequence[R]], *, max_batch_size: int, max_queue_size: int,
                 max_delay_s: float = 0.0, max_concurrent: int = 1, observer: BatchObserver | None = None,
                 key: Callable[[T], float] | None = None) -> None:
        self._process = process
        self._key = key
        self._max_batch_size = max_batch_size
        self._max_queue_size = max_queue_size
        self._max_delay_s = max_delay_s
        self._max_concurrent = max_concurrent
        self._observer = observer
        self._queue: collections.deque[_Pending[T, R]] = collections.deque()
        self._queued_units = 0
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # notified on every submit and on close
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: list[threading.Thread] = []
        self._groups = itertools.count()
        self._running_groups: collections.Counter[int] = collections.Counter()  # parts being processed
        self._closed = False

    @property
    def queued_units(self) -> int:
        """Units (texts) waiting, not counting the batches being processed."""
        return self._queued_units

    async def submit(self, item: T, size: int = 1, deadline: float | None = None) -> R:
        """Queue ``item`` (worth ``size`` units) and wait for its result.

        ``deadline`` is a :func:`time.monotonic` instant after which the item is not worth running.
        """
        (pending,) = self._enqueue([(item, size)], deadline)
        try:
            return await pending.future
        except asyncio.CancelledError:
            self._withdraw(pending)
            raise

    async def submit_all(self, items: Sequence[tuple[T, int]], deadline: float | None = None) -> list[R]:
        """Queue several ``(item, size)`` at once (all admitted or none) and wait for all their results.

        They may run in different batches, on different workers at the same time. If one
        fails, the others are withdrawn and its exception is raised.
        """
        pendings = self._enqueue(items, deadline, group=next(self._groups))
        try:
            return list(await asyncio.gather(*(p.future for p in pendings)))
        except BaseException:
            for pending in pendings:
                self._withdraw(pending)
            raise

    def _enqueue(self, items: Sequence[tuple[T, int]], deadline: float | None,
                 group: int | None = None) -> list[_Pending[T, R]]:
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        pendings = [_Pending(item, size, deadline, now, self._key(item) if self._key is not None else 0.0,
                             loop.create_future(), group) for item, size in items]
        units = sum(p.size for p in pendings)
        with self._lock:
            if self._closed:
                raise ModelNotReady("the server is shutting down")
            if self._queued_units + units > self._max_queue_size:
                raise Overloaded(f"queue full ({self._queued_units} of {self._max_queue_size} texts waiting, {units} "
                                 "more asked); retry with backoff")
            if not self._workers:  # started lazily, to hand results back to the caller's loop
                self._start_workers(loop)
            self._queue.extend(pendings)
            self._queued_units += units
            self._report_depth()
            if len(pendings) == 1:
                self._arrived.notify()
            else:
                self._arrived.notify_all()
        return pendings

    async def close(self) -> None:
        """Refuse new work; queued items get :class:`ModelNotReady`. Batches being processed finish first."""
        with self._lock:
            self._closed = True
            queued = list(self._queue)
            self._queue.clear()
            self._queued_units = 0
            self._report_depth()
            self._arrived.notify_all()
        for pending in queued:
            if not pending.future.done():
                pending.future.set_exception(ModelNotReady("the server is shutting down"))
        for worker in self._workers:
            await asyncio.to_thread(worker.join)
        await asyncio.sleep(0)  # let the last batches' results (already posted) reach their callers

    def _start_workers(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for index in range(self._max_concurrent):
            worker = threading.Thread(target=self._work, name=f"batcher_{index}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def _withdraw(self, pending: _Pending[T, R]) -> None:
        """Drop an item whose caller gave up (client cancelled, deadline passed) from the queue now.

        Left queued, it would hold queue capacity that live requests are refused for while
        every worker is busy. An item already in a batch is only cancelled: its result is discarded.
        """
        if not pending.future.done():
            pending.future.cancel()
        with self._lock:
            try:
                self._queue.remove(pending)
            except ValueError:  # already taken into a batch
                return
            self._queued_units -= pending.size
            self._report_depth()

    def _report_depth(self) -> None:
        if self._observer is not None:
            self._observer.queue_depth(self._queued_units)

    def _work(self) -> None:
        """A worker thread: take a batch, process it, post the results to the loop; until closed."""
        loop = self._loop
        assert loop is not None
        waited = True
        batch: list[_Pending[T, R]] = []
        while True:
            with self._lock:
                self._running_groups.subtract(p.group for p in batch if p.group is not None)
                self._running_groups += collections.Counter()  # drops the groups that reached zero
                if not self._queue and not self._closed:
                    waited = True
                    self._arrived.wait_for(lambda: self._queue or self._closed)
                if self._closed:
                    return
                # Items already waiting when this worker came back: load is high, so a fuller
                # batch may be worth a wait.
                if not waited and self._max_delay_s > 0:
                    self._arrived.wait_for(lambda: self._queued_units >= self._max_batch_size or self._closed,
                                           timeout=self._max_delay_s)
                    if self._closed:
                        return
                batch, expired = self._take()
                self._running_groups.update(p.group for p in batch if p.group is not None)
            waited = False
            started, started_cpu = time.monotonic(), time.thread_time()
            results: Sequence[R] | None = None
            error: Exception | None = None
            if batch:
                try:
                    results = self._process([p.item for p in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
                except Exception as exc:  # every waiting caller hears about the failure
                    error = exc
                try:  # a failing observer must not cost the callers their answers
                    if self._observer is not None:
                        self._observer.batch_done(sum(p.size for p in batch), [started - p.enqueued for p in batch],
                                                  time.monotonic() - started, time.thread_time() - started_cpu)
                except Exception:
                    log.exception("batch observer failed")
            try:
                loop.call_soon_threadsafe(self._answer, batch, results, error, expired)
            except RuntimeError:  # the loop is gone (interpreter shutdown): nobody is waiting
                return

    def _take(self) -> tuple[list[_Pending[T, R]], list[_Pending[T, R]]]:
        """Under the lock: the next batch (in arrival order) and the expired items met on the way.

        The batch is the oldest live item (of a caller none of whose parts is being processed,
        if any waits), then others while they fit ``max_batch_size``. Items not chosen go back
        to the front of the queue in their order.
        """
        self._oldest_eligible_first()
        now = time.monotonic()
        window: list[_Pending[T, R]] = []
        expired: list[_Pending[T, R]] = []
        while self._queue and len(window) < SCAN_ITEMS:
            pending = self._queue.popleft()
            if pending.deadline is not None and pending.deadline <= now:
                self._queued_units -= pending.size
                expired.append(pending)
            else:
                window.append(pending)
        if not window:
            self._report_depth()
            return [], expired
        anchor = window[0]
        # Parts of a request already running elsewhere do not join another caller's batch:
        # they would make that caller wait for them.
        running = self._running_groups
        rest = [i for i in range(1, len(window))
                if window[i].group is None or window[i].group == anchor.group or window[i].group not in running]
        # Candidates in order of preference: arrival, or nearness of key to the oldest item's.
        preferred = sorted(rest, key=lambda i: abs(window[i].key - anchor.key)) if self._key is not None else rest
        chosen, units = {0}, anchor.size
        for index in preferred:
            if units + window[index].size <= self._max_batch_size:
                chosen.add(index)
                units += window[index].size
                if units == self._max_batch_size:
                    break
        self._queue.extendleft(reversed([p for i, p in enumerate(window) if i not in chosen]))
        self._queued_units -= units
        self._report_depth()
        return [p for i, p in enumerate(window) if i in chosen], expired

    def _oldest_eligible_first(self) -> None:
        """Move the oldest item whose request has no part being processed to the queue's front.

        Only parts of running requests are skipped, so the scan stops at the first other item.
        """
        if not self._running_groups:
            return
        for index, pending in enumerate(self._queue):
            if pending.group is None or pending.group not in self._running_groups:
                if index:
                    del self._queue[index]
                    self._queue.appendleft(pending)
                return

    def _answer(self, batch: list[_Pending[T, R]], results: Sequence[R] | None, error: Exception | None,
                expired: list[_Pending[T, R]]) -> None:
        """On the loop: resolve a processed batch's futures, and fail the expired items."""
        now = time.monotonic()
        for pending in expired:
            if not pending.future.done():
                pending.future.set_exception(DeadlineExpired(
                    f"deadline passed after {now - pending.enqueued:.3f} s in the queue, before inference"))
        for index, pending in enumerate(batch):
            if pending.future.done():  # its caller gave up
                continue
            if error is not None:
                pending.future.set_exception(error)
            else:
                assert results is not None
                pending.future.set_result(results[index])
