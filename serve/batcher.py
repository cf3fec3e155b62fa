"""An asyncio dynamic batcher, independent of gRPC and of the model.

Callers ``await batcher.submit(item, size)``; a dispatcher task takes queued items in
arrival order, up to ``max_batch_size`` units (texts), and hands them to ``process`` in a
worker thread, so the event loop stays free while the model runs. Up to ``max_concurrent``
batches run at once (one per worker thread). Policy:

* A batcher with a free worker dispatches a new item at once: a lone request never waits
  out a window.
* Items that arrive while every worker is busy are coalesced into the next batch; with
  ``max_delay_s > 0`` that batch may also wait that long to fill up (only under load).
* The queue is bounded in units: a submit that would overflow it raises
  :class:`~serve.errors.Overloaded` at once.
* Items whose deadline has passed, or whose caller gave up, are dropped before ``process``;
  a caller that gives up frees its queue units at once.
* If ``process`` raises, every item of that batch gets the exception.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from serve.errors import DeadlineExpired, ModelNotReady, Overloaded

T = TypeVar("T")
R = TypeVar("R")


class BatchObserver(Protocol):
    """Receives the batcher's measurements (the metrics module implements it)."""

    def queue_depth(self, units: int) -> None: ...

    def batch_done(self, units: int, queue_seconds: Sequence[float], compute_seconds: float) -> None: ...


@dataclass
class _Pending(Generic[T, R]):
    item: T
    size: int
    deadline: float | None
    enqueued: float
    future: asyncio.Future[R] = field(repr=False)


class Batcher(Generic[T, R]):
    """Coalesces concurrent submissions into calls of ``process(items) -> results`` (same order)."""

    def __init__(self, process: Callable[[list[T]], Sequence[R]], *, max_batch_size: int, max_queue_size: int,
                 max_delay_s: float = 0.0, max_concurrent: int = 1,
                 executor: concurrent.futures.Executor | None = None, observer: BatchObserver | None = None) -> None:
        self._process = process
        self._max_batch_size = max_batch_size
        self._max_queue_size = max_queue_size
        self._max_delay_s = max_delay_s
        self._max_concurrent = max_concurrent
        self._own_executor = executor is None
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(max_concurrent, thread_name_prefix="batcher")
        self._observer = observer
        self._queue: collections.deque[_Pending[T, R]] = collections.deque()
        self._queued_units = 0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._slots: asyncio.Semaphore | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def queued_units(self) -> int:
        """Units (texts) waiting, not counting the batch being processed."""
        return self._queued_units

    async def submit(self, item: T, size: int = 1, deadline: float | None = None) -> R:
        """Queue ``item`` (worth ``size`` units) and wait for its result.

        ``deadline`` is a :func:`time.monotonic` instant after which the item is not worth running.
        """
        if self._closed:
            raise ModelNotReady("the server is shutting down")
        if self._queued_units + size > self._max_queue_size:
            raise Overloaded(f"queue full ({self._queued_units} of {self._max_queue_size} texts waiting); "
                             "retry with backoff")
        loop = asyncio.get_running_loop()
        if self._worker is None:  # created lazily so that the queue lives in the caller's loop
            self._wakeup = asyncio.Event()
            self._slots = asyncio.Semaphore(self._max_concurrent)
            self._worker = loop.create_task(self._run(), name="batcher")
        pending = _Pending(item, size, deadline, time.monotonic(), loop.create_future())
        self._queue.append(pending)
        self._queued_units += size
        self._report_depth()
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            return await pending.future
        except asyncio.CancelledError:
            self._withdraw(pending)
            raise

    async def close(self) -> None:
        """Stop the worker; queued items get :class:`ModelNotReady`. In-flight batches finish first."""
        self._closed = True
        if self._worker is not None:
            assert self._wakeup is not None
            self._wakeup.set()
            await self._worker
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        if self._own_executor:
            self._executor.shutdown(wait=True)

    def _withdraw(self, pending: _Pending[T, R]) -> None:
        """Drop an item whose caller gave up (client cancelled, deadline passed) from the queue now.

        Left queued until the next dispatch, it would hold queue capacity that live requests are
        refused for while every worker is busy. An item already taken into a batch is only
        cancelled: its result is discarded.
        """
        pending.future.cancel()
        for index, queued in enumerate(self._queue):
            if queued is pending:
                del self._queue[index]
                self._queued_units -= pending.size
                self._report_depth()
                return

    def _report_depth(self) -> None:
        if self._observer is not None:
            self._observer.queue_depth(self._queued_units)

    async def _run(self) -> None:
        assert self._wakeup is not None and self._slots is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self._closed:
                self._fail_all(ModelNotReady("the server is shutting down"))
                continue
            # Items queued while every worker was busy: load is high, so a fuller batch may be worth a wait.
            under_load = self._slots.locked()
            await self._slots.acquire()
            if self._closed:  # closed while waiting for a worker: queued items are refused above
                self._slots.release()
                continue
            if under_load and self._max_delay_s > 0:
                await self._fill(self._max_delay_s)
            batch = self._take()
            if not batch:
                self._slots.release()
                continue
            task = loop.create_task(self._execute(loop, batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _fill(self, delay: float) -> None:
        """Wait until the queue holds a full batch, or ``delay`` seconds pass."""
        assert self._wakeup is not None
        until = time.monotonic() + delay
        while self._queued_units < self._max_batch_size and not self._closed:
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[_Pending[T, R]]:
        """Pop items in order up to ``max_batch_size`` units (at least one), dropping dead ones."""
        batch: list[_Pending[T, R]] = []
        units = 0
        now = time.monotonic()
        while self._queue and (not batch or units + self._queue[0].size <= self._max_batch_size):
            pending = self._queue.popleft()
            self._queued_units -= pending.size
            if pending.future.done():  # cancelled by its caller
                continue
            if pending.deadline is not None and pending.deadline <= now:
                pending.future.set_exception(DeadlineExpired(
                    f"deadline passed after {now - pending.enqueued:.3f} s in the queue, before inference"))
                continue
            batch.append(pending)
            units += pending.size
        self._report_depth()
        return batch

    async def _execute(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending[T, R]]) -> None:
        try:
            await self._execute_batch(loop, batch)
        finally:
            assert self._slots is not None
            self._slots.release()

    async def _execute_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending[T, R]]) -> None:
        started = time.monotonic()
        try:
            results = await loop.run_in_executor(self._executor, self._process, [p.item for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
        except Exception as exc:  # every waiting caller hears about the failure
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        finally:
            if self._observer is not None:
                self._observer.batch_done(sum(p.size for p in batch), [started - p.enqueued for p in batch],
                                          time.monotonic() - started)
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)

    def _fail_all(self, exc: Exception) -> None:
        while self._queue:
            pending = self._queue.popleft()
            self._queued_units -= pending.size
            if not pending.future.done():
                pending.future.set_exception(exc)
        self._report_depth()
