"""Several step loops per version (serve/engine/step_engine.py): sharing a request out, withdrawing parts,
and a real server whose loops give every text its whole-sequence answer."""

from __future__ import annotations

import asyncio
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protos.sentiment.v1 import sentiment_pb2 as pb
from protos.sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from serve.engine.step_engine import allot, enqueue_parts, gather_parts, share_out, step_plan
from serve.ops.errors import Overloaded
from serve.ops.settings import Settings
from tests.fixtures.tiny_repository import build_tiny_repository
from tests.serve.conftest import REVIEWS, ServerThread, alone_scorer, make_settings
from tests.serve.test_scheduler import WAIT, SumModel, expected, make, run

TIMEOUT = 20.0


@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 12)), min_size=1, max_size=6), st.integers(1, 60))
def test_allot_fills_the_least_loaded_loops_within_their_room(loops: list[tuple[int, int]], count: int) -> None:
    loads, rooms = [load for load, _ in loops], [room for _, room in loops]
    if count > sum(rooms):
        with pytest.raises(Overloaded, match="queue full"):
            allot(count, loads, rooms)
        return
    given = allot(count, loads, rooms)
    assert sum(given) == count and all(0 <= g <= room for g, room in zip(given, rooms, strict=True))
    after = [load + g for load, g in zip(loads, given, strict=True)]
    for i, g in enumerate(given):  # a loop got a text only if no loop with room left was less loaded
        if g:
            assert all(after[i] - 1 <= after[j] for j in range(len(loads)) if given[j] < rooms[j])
    parts = share_out([g for g in given if g])
    assert [i for part in parts for i in part] == list(range(count))


def test_allot_shares_a_request_out_and_skips_full_loops() -> None:
    assert allot(8, [0, 0], [100, 100]) == [4, 4]
    assert allot(2, [5, 0], [100, 100]) == [0, 2]
    assert allot(3, [0, 0], [0, 8]) == [0, 3]  # the first loop's queue is full: the other takes all


def test_step_plan_follows_the_thread_plan_on_cpu_and_is_one_loop_on_cuda() -> None:
    assert step_plan(Settings(workers=3, intra_op_threads=1)) == (3, 1)
    assert step_plan(Settings(workers=1, intra_op_threads=2)) == (1, 2)
    assert step_plan(Settings(device="cuda", workers=4)) == (1, 1)


def test_a_withdrawn_answer_frees_its_queued_texts_and_is_never_delivered() -> None:
    async def main():
        model = SumModel(gated=True)
        scheduler = make(model, max_active_rows=1)
        first = scheduler.enqueue([[5] * 8])
        await model.entered(1)  # first holds the only place
        second = scheduler.enqueue([[1], [2]])
        assert scheduler.queued_units == 2
        second.withdraw()
        second.withdraw()  # idempotent
        assert scheduler.queued_units == 0
        model.allow(10)
        assert list(await first) == [expected([5] * 8)]
        with pytest.raises(asyncio.CancelledError):
            await second
        await scheduler.close()
        return model

    model = run(main())
    assert all(1 not in firsts and 2 not in firsts for firsts in model.firsts)


def test_a_part_refused_by_a_full_loop_withdraws_the_parts_already_queued() -> None:
    async def main():
        model = SumModel(gated=True)
        roomy, full = make(model, max_active_rows=1), make(model, max_active_rows=1, max_queue_size=1)
        blockers = [roomy.enqueue([[7] * 8]), full.enqueue([[7] * 8])]
        await model.entered(2)
        full.enqueue([[6]])  # its queue is now full
        with pytest.raises(Overloaded):
            enqueue_parts([roomy, full], [[0, 1], [2]], [np.array([1]), np.array([2]), np.array([3])], None)
        assert roomy.queued_units == 0 and full.queued_units == 1
        model.allow(20)
        assert [list(await b) for b in blockers] == [[expected([7] * 8)]] * 2
        await asyncio.gather(roomy.close(drain=True), full.close(drain=True))

    run(main())


def test_parts_come_back_in_the_requests_order_and_a_failing_part_withdraws_the_others() -> None:
    async def main():
        model = SumModel(fail_on=99)
        loops = [make(model, max_active_rows=2, max_step_tokens=3) for _ in range(3)]
        texts = [np.array(t) for t in ([1, 2, 3], [4], [5, 6], [7, 8, 9, 10], [11])]
        parts = share_out([2, 2, 1])
        answer = await gather_parts(enqueue_parts(loops, parts, texts, None), len(texts), parts)
        np.testing.assert_allclose(answer, [expected(t.tolist()) for t in texts], rtol=1e-6)

        gated = SumModel(gated=True)  # the slow loop's steps wait for the test
        slow, failing = make(gated, max_active_rows=2), make(SumModel(fail_on=99), max_active_rows=2)
        texts = [np.array([1] * 30), np.array([2] * 30), np.array([99])]
        answers = enqueue_parts([slow, failing], [[0, 1], [2]], texts, None)
        await gated.entered(1)  # the slow part's first step is held; the failing part fails meanwhile
        with pytest.raises(ValueError, match="poisoned"):
            await asyncio.wait_for(gather_parts(answers, 3, [[0, 1], [2]]), timeout=WAIT)
        gated.allow(50)
        await asyncio.gather(*(s.close(drain=True) for s in [*loops, slow, failing]))
        return gated

    gated = run(main())
    assert len(gated.firsts) <= 2  # withdrawn while its first step ran: its 30-token rows never read on


def test_a_cancelled_request_leaves_every_loop() -> None:
    async def main():
        model = SumModel(gated=True)
        loops = [make(model, max_active_rows=1) for _ in range(2)]
        texts = [np.array([4] * 40), np.array([5] * 40)]
        task = asyncio.ensure_future(gather_parts(enqueue_parts(loops, [[0], [1]], texts, None), 2, [[0], [1]]))
        await model.entered(2)  # one row on each loop
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        model.allow(4)
        after = asyncio.ensure_future(loops[0].submit([[3]]))
        model.allow(4)
        assert list(await after) == [expected([3])]
        await asyncio.gather(*(loop.close() for loop in loops))
        return model

    model = run(main())
    assert len([f for f in model.firsts if 4 in f or 5 in f]) <= 4  # 40-token rows, steps of 8: left early


@pytest.fixture(scope="module")
def loops_repository(tmp_path_factory: pytest.TempPathFactory):
    return build_tiny_repository(tmp_path_factory.mktemp("loops_repo"), steps=True)


def test_a_server_with_three_loops_gives_every_text_its_whole_sequence_answer(loops_repository) -> None:
    reference = alone_scorer(loops_repository)
    running = ServerThread(make_settings(loops_repository, batching="steps", workers=3, step_tokens=3,
                                         max_active_rows=2, max_queue_size=9, max_texts_per_request=9))
    try:
        api = pb_grpc.SentimentServiceStub(running.channel)
        texts = [REVIEWS[i % len(REVIEWS)] + " more" * i for i in range(7)]
        reply = api.PredictBatch(pb.PredictBatchRequest(texts=texts), timeout=TIMEOUT)
        np.testing.assert_allclose([p.probability for p in reply.predictions], reference(texts), atol=1e-5)

        def one(i: int) -> float:
            return api.Predict(pb.PredictRequest(text=texts[i % 7]), timeout=TIMEOUT).prediction.probability

        with ThreadPoolExecutor(6) as pool:
            got = list(pool.map(one, range(30)))
        np.testing.assert_allclose(got, [reference([texts[i % 7]])[0] for i in range(30)], atol=1e-5)
        page = urllib.request.urlopen(f"http://127.0.0.1:{running.server.metrics_port}/metrics",
                                      timeout=TIMEOUT).read().decode()
        assert "sentiment_queue_depth 0.0" in page
        with pytest.raises(grpc.RpcError) as refused:
            api.PredictBatch(pb.PredictBatchRequest(texts=["fine film", ""]), timeout=TIMEOUT)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # --max-queue-size is the server's bound: 9 texts fit in three loops' queues of 3 each.
        nine = (texts * 2)[:9]
        reply = api.PredictBatch(pb.PredictBatchRequest(texts=nine), timeout=TIMEOUT)
        np.testing.assert_allclose([p.probability for p in reply.predictions], reference(nine), atol=1e-5)
    finally:
        running.close()
