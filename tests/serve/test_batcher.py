"""The dynamic batcher on its own, with a fake model whose timing the test controls."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from serve.engine.batcher import Batcher
from serve.ops.errors import DeadlineExpired, ModelNotReady, Overloaded

WAIT = 10.0  # upper bound for any single wait; nothing here should come close


class GatedModel:
    """Doubles each item; records every batch; can hold a batch until the test releases it."""

    def __init__(self, gated: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not gated:
            self.release.set()

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.entered.set()
        assert self.release.wait(WAIT), "test never released the batch"
        if any(item < 0 for item in items):
            raise ValueError("negative item")
        return [2 * item for item in items]


async def wait_entered(model: GatedModel) -> None:
    assert await asyncio.to_thread(model.entered.wait, WAIT)


async def wait_queued(batcher: Batcher, units: int) -> None:
    """Yield to the loop until ``units`` are queued (bounded)."""
    until = time.monotonic() + WAIT
    while batcher.queued_units < units:
        assert time.monotonic() < until, f"only {batcher.queued_units} units queued"
        await asyncio.sleep(0)


class ItemGates:
    """Doubles each item; records every batch; holds a batch while it contains a gated item."""

    def __init__(self, *gated: int) -> None:
        self.calls: list[list[int]] = []
        self.gates = {item: threading.Event() for item in gated}

    def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(items)
        for item in items:
            if item in self.gates:
                assert self.gates[item].wait(WAIT), f"test never released item {item}"
        return [2 * item for item in items]


async def wait_batches(batches: list[list[int]], count: int, why: str) -> None:
    """Yield to the loop until ``count`` batches have started (bounded)."""
    until = time.monotonic() + WAIT
    while len(batches) < count:
        assert time.monotonic() < until, why
        await asyncio.sleep(0.001)


def test_lone_item_is_dispatched_at_once_even_with_a_delay_window() -> None:
    async def main() -> float:
        model = GatedModel()
        batcher = Batcher(model, max_batch_size=8, max_queue_size=64, max_delay_s=5.0)
        started = time.monotonic()
        assert await batcher.submit(21) == 42
        elapsed = time.monotonic() - started
        await batcher.close()
        assert model.batches == [[21]]
        return elapsed

    assert asyncio.run(main()) < 2.5  # far below the 5 s window: an idle batcher does not wait


def test_items_arriving_during_a_batch_are_coalesced_in_order() -> None:
    async def main() -> None:
        model = GatedModel(gated=True)
        batcher = Batcher(model, max_batch_size=4, max_queue_size=64)
        first = asyncio.ensure_future(batcher.submit(0))
        await wait_entered(model)
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 7)]
        await wait_queued(batcher, 6)
        model.release.set()
        assert await first == 0
        assert await asyncio.gather(*rest) == [2 * i for i in range(1, 7)]
        await batcher.close()
        assert model.batches == [[0], [1, 2, 3, 4], [5, 6]]

    asyncio.run(main())


def test_units_not_items_fill_a_batch() -> None:
    async def main() -> None:
        model = GatedModel(gated=True)
        batcher = Batcher(model, max_batch_size=4, max_queue_size=64)
        first = asyncio.ensure_future(batcher.submit(0, size=1))
        await wait_entered(model)
        big = [asyncio.ensure_future(batcher.submit(i, size=3)) for i in (1, 2)]
        await wait_queued(batcher, 6)
        model.release.set()
        await asyncio.gather(first, *big)
        await batcher.close()
        assert model.batches == [[0], [1], [2]]  # 3 + 3 units would exceed 4

    asyncio.run(main())


def test_full_queue_is_refused_at_once() -> None:
    async def main() -> None:
        model = GatedModel(gated=True)
        batcher = Batcher(model, max_batch_size=4, max_queue_size=5)
        first = asyncio.ensure_future(batcher.submit(0))
        await wait_entered(model)
        queued = asyncio.ensure_future(batcher.submit(1, size=5))
        await wait_queued(batcher, 5)
        with pytest.raises(Overloaded, match="queue full"):
            await batcher.submit(2)
        model.release.set()
        assert await asyncio.gather(first, queued) == [0, 2]
        await batcher.close()

    asyncio.run(main())


def test_expired_and_cancelled_items_never_reach_the_model() -> None:
    async def main() -> None:
        model = GatedModel(gated=True)
        batcher = Batcher(model, max_batch_size=8, max_queue_size=64)
        first = asyncio.ensure_future(batcher.submit(0))
        await wait_entered(model)
        expired = asyncio.ensure_future(batcher.submit(1, deadline=time.monotonic() - 1))
        cancelled = asyncio.ensure_future(batcher.submit(2))
        alive = asyncio.ensure_future(batcher.submit(3, deadline=time.monotonic() + WAIT))
        await wait_queued(batcher, 3)
        cancelled.cancel()
        # cancel() only schedules the CancelledError: the item leaves the queue when the
        # cancelled task next runs. Wait for that before the worker may take the next batch.
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert batcher.queued_units == 2
        model.release.set()
        with pytest.raises(DeadlineExpired, match="before inference"):
            await expired
        assert await alive == 6
        await asyncio.gather(first)
        await batcher.close()
        assert model.batches == [[0], [3]]

    asyncio.run(main())


def test_a_failing_batch_fails_every_item_in_it_and_the_batcher_goes_on() -> None:
    async def main() -> None:
        model = GatedModel(gated=True)
        batcher = Batcher(model, max_batch_size=8, max_queue_size=64)
        first = asyncio.ensure_future(batcher.submit(0))
        await wait_entered(model)
        doomed = [asyncio.ensure_future(batcher.submit(i)) for i in (5, -1)]
        await wait_queued(batcher, 2)
        model.release.set()
        await first
        results = await asyncio.gather(*doomed, return_exceptions=True)
        assert all(isinstance(r, ValueError) for r in results)
        assert await batcher.submit(4) == 8
        await batcher.close()

    asyncio.run(main())


def test_close_refuses_new_work_and_fails_what_is_queued() -> None:
    async def main() -> None:
        model = GatedModel(gated=True)
        batcher = Batcher(model, max_batch_size=1, max_queue_size=64)
        running = asyncio.ensure_future(batcher.submit(0))
        await wait_entered(model)
        queued = asyncio.ensure_future(batcher.submit(1))
        await wait_queued(batcher, 1)
        closing = asyncio.ensure_future(batcher.close())
        await asyncio.sleep(0)
        model.release.set()
        await closing
        assert await running == 0  # in flight: finished
        with pytest.raises(ModelNotReady):
            await queued
        with pytest.raises(ModelNotReady):
            await batcher.submit(2)

    asyncio.run(main())


def test_delay_window_under_load_fills_the_next_batch() -> None:
    async def main() -> None:
        model = GatedModel(gated=True)
        batcher = Batcher(model, max_batch_size=3, max_queue_size=64, max_delay_s=WAIT)
        first = asyncio.ensure_future(batcher.submit(0))
        await wait_entered(model)
        second = asyncio.ensure_future(batcher.submit(1))
        await wait_queued(batcher, 1)
        model.release.set()
        await first
        # The batcher is now waiting (up to WAIT) for the batch to fill; two more fill it.
        more = [asyncio.ensure_future(batcher.submit(i)) for i in (2, 3)]
        assert await asyncio.gather(second, *more) == [2, 4, 6]
        await batcher.close()
        assert model.batches == [[0], [1, 2, 3]]

    asyncio.run(main())


def test_concurrent_workers_run_batches_in_parallel_and_coalesce_when_all_are_busy() -> None:
    async def main() -> None:
        models = [GatedModel(gated=True), GatedModel(gated=True)]
        calls: list[list[int]] = []

        def process(items: list[int]) -> list[int]:
            calls.append(items)
            return models[len(calls) - 1](items) if len(calls) <= 2 else [2 * i for i in items]

        batcher = Batcher(process, max_batch_size=8, max_queue_size=64, max_concurrent=2)
        first = asyncio.ensure_future(batcher.submit(0))
        await wait_entered(models[0])
        second = asyncio.ensure_future(batcher.submit(1))  # a worker is free: dispatched at once
        await wait_entered(models[1])
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(2, 6)]
        await wait_queued(batcher, 4)  # both workers busy: these wait together
        models[1].release.set()
        assert await second == 2
        assert await asyncio.gather(*rest) == [4, 6, 8, 10]
        models[0].release.set()
        assert await first == 0
        await batcher.close()
        assert calls == [[0], [1], [2, 3, 4, 5]]

    asyncio.run(main())


def test_a_keyed_batch_starts_with_the_oldest_item_and_takes_the_nearest_keys() -> None:
    async def main() -> None:
        model = GatedModel(gated=True)
        # Items are lengths; the key is the item itself.
        batcher = Batcher(model, max_batch_size=3, max_queue_size=64, key=float)
        first = asyncio.ensure_future(batcher.submit(500))
        await wait_entered(model)
        waiting = [asyncio.ensure_future(batcher.submit(n)) for n in (100, 10, 400, 95, 12, 110)]
        await wait_queued(batcher, 6)
        model.release.set()
        assert await asyncio.gather(first, *waiting) == [1000, 200, 20, 800, 190, 24, 220]
        await batcher.close()
        # The oldest (100) leads with its two nearest (95, 110); then the oldest left (10) with 12 and 400.
        assert model.batches == [[500], [100, 95, 110], [10, 400, 12]]

    asyncio.run(main())


def test_a_worker_takes_the_next_batch_without_the_event_loop() -> None:
    async def main() -> None:
        model = GatedModel(gated=True)
        batcher = Batcher(model, max_batch_size=4, max_queue_size=64)
        first = asyncio.ensure_future(batcher.submit(0))
        await wait_entered(model)
        second = asyncio.ensure_future(batcher.submit(1))
        await wait_queued(batcher, 1)
        # Block the event loop (no await) while the first batch ends: the next one must start anyway.
        model.release.set()
        until = time.monotonic() + WAIT
        while len(model.batches) < 2:
            assert time.monotonic() < until, "the next batch waited for the event loop"
            time.sleep(0.001)
        assert await asyncio.gather(first, second) == [0, 2]
        await batcher.close()

    asyncio.run(main())


def test_submit_all_admits_all_or_none_and_answers_in_order() -> None:
    async def main() -> None:
        model = GatedModel()
        batcher = Batcher(model, max_batch_size=2, max_queue_size=5, max_concurrent=2)
        assert await batcher.submit_all([(i, 1) for i in range(5)]) == [0, 2, 4, 6, 8]
        with pytest.raises(Overloaded):
            await batcher.submit_all([(i, 1) for i in range(6)])
        assert batcher.queued_units == 0  # nothing of the refused request was queued
        await batcher.close()
        assert sorted(i for batch in model.batches for i in batch) == list(range(5))
        assert all(len(batch) <= 2 for batch in model.batches)

    asyncio.run(main())


def test_submit_all_fails_whole_and_withdraws_the_rest_when_a_part_fails() -> None:
    async def main() -> None:
        calls: list[list[int]] = []
        release_second = threading.Event()

        def process(items: list[int]) -> list[int]:
            calls.append(items)
            if len(calls) == 2:  # holds the worker while the failure of the first part reaches the caller
                assert release_second.wait(WAIT)
            if any(item < 0 for item in items):
                raise ValueError("negative item")
            return [2 * item for item in items]

        batcher = Batcher(process, max_batch_size=1, max_queue_size=64)
        with pytest.raises(ValueError, match="negative"):
            await batcher.submit_all([(-1, 1), (2, 1), (3, 1)])
        assert batcher.queued_units == 0  # the parts not yet taken were withdrawn
        release_second.set()
        await batcher.close()
        # The worker may have taken 2 before the failure reached the caller, but never 3: it is
        # held inside 2 until after the withdrawal.
        assert calls in ([[-1]], [[-1], [2]])

    asyncio.run(main())


def test_a_failing_observer_never_costs_a_caller_its_answer() -> None:
    class BrokenObserver:
        def queue_depth(self, units: int) -> None:
            pass

        def batch_done(self, *args: object) -> None:
            raise RuntimeError("metrics backend down")

    async def main() -> None:
        batcher = Batcher(GatedModel(), max_batch_size=4, max_queue_size=64, observer=BrokenObserver())
        assert await asyncio.wait_for(asyncio.gather(*(batcher.submit(i) for i in range(6))), WAIT) == \
            [2 * i for i in range(6)]
        await batcher.close()

    asyncio.run(main())


def test_a_large_request_does_not_take_every_worker_from_the_requests_behind_it() -> None:
    async def main() -> None:
        model = ItemGates(100, 101)
        batcher = Batcher(model, max_batch_size=1, max_queue_size=64, max_concurrent=2)
        large = asyncio.ensure_future(batcher.submit_all([(i, 1) for i in (100, 101, 102)]))
        # Nobody else waits: both workers take a part of it.
        await wait_batches(model.calls, 2, "only one worker took the request's parts")
        small = asyncio.ensure_future(batcher.submit(1))
        await wait_queued(batcher, 2)  # 102, then the small request
        model.gates[101].set()  # one worker comes back while the other still holds part 100
        assert await small == 2
        assert model.calls[2] == [1]  # served before the large request's next part
        model.gates[100].set()
        assert await large == [200, 202, 204]
        await batcher.close()

    asyncio.run(main())


def test_a_callers_batch_is_not_filled_with_parts_of_a_request_running_elsewhere() -> None:
    async def main() -> None:
        model = ItemGates(100, 102)
        batcher = Batcher(model, max_batch_size=4, max_queue_size=64, max_concurrent=2)
        large = asyncio.ensure_future(batcher.submit_all([(i, 2) for i in range(100, 106)]))
        # [100, 101] and [102, 103], one per worker.
        await wait_batches(model.calls, 2, "both workers should hold parts of the request")
        small = asyncio.ensure_future(batcher.submit(1))
        await wait_queued(batcher, 5)  # parts 104 and 105, then the small request
        model.gates[102].set()  # the worker holding [102, 103] comes back; [100, 101] still runs
        assert await small == 2
        # Room for part 104 (4 units) but it stays out: it would make the small caller wait for it.
        assert model.calls[2] == [1]
        model.gates[100].set()
        assert await large == [2 * i for i in range(100, 106)]
        await batcher.close()

    asyncio.run(main())
