"""The step scheduler on its own: a fake step model whose steps the test releases one at a time,
and the real tiny fixture model (step graph) for exactness."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve.errors import DeadlineExpired, ModelNotReady, Overloaded
from serve.preprocessing import encode_texts, pad_batch
from serve.repository import load_version, open_session
from serve.scheduler import StepPolicy, StepRecord, StepScheduler
from serve.step_runner import open_step_runner
from tests.fixtures.tiny_repository import SENTENCES, build_tiny_repository

WAIT = 10.0  # upper bound for any single wait; nothing here should come close


class SumModel:
    """A fake step model: the answer is the mean id / 1000 (state: the running sum of ids).

    Records each step's rows and step lengths. ``gated``: each step waits for one
    :meth:`allow` from the test (deterministic interleaving, no sleeps).
    """

    pad_id = 0

    def __init__(self, gated: bool = False, fail_on: int | None = None) -> None:
        self.steps: list[np.ndarray] = []  # step_lengths of each step
        self.firsts: list[list[int]] = []  # first id of each row (tests tag rows by it)
        self._gated = gated
        self._permits = threading.Semaphore(0)
        self._entered = threading.Condition()
        self.fail_on = fail_on

    def initial_state(self, rows: int) -> dict[str, np.ndarray]:
        return {"sum": np.zeros((rows, 1), dtype=np.float32)}

    def step(self, input_ids: np.ndarray, step_lengths: np.ndarray, state: dict[str, np.ndarray]):
        with self._entered:
            self.steps.append(step_lengths.copy())
            self.firsts.append(input_ids[:, 0].tolist())
            self._entered.notify_all()
        if self._gated:
            assert self._permits.acquire(timeout=WAIT), "test never allowed the step"
        if self.fail_on is not None and self.fail_on in input_ids:
            raise ValueError("poisoned id")
        mask = np.arange(input_ids.shape[1])[None, :] < step_lengths[:, None]
        return {"sum": state["sum"] + (input_ids * mask).sum(axis=1, keepdims=True).astype(np.float32)}

    def head(self, state: dict[str, np.ndarray], lengths: np.ndarray) -> np.ndarray:
        return (state["sum"][:, 0] / lengths / 1000).astype(np.float32)

    def allow(self, steps: int = 1) -> None:
        for _ in range(steps):
            self._permits.release()

    async def entered(self, count: int) -> None:
        """Wait until ``count`` steps have started."""
        def wait() -> bool:
            with self._entered:
                return self._entered.wait_for(lambda: len(self.steps) >= count, WAIT)
        assert await asyncio.to_thread(wait), f"only {len(self.steps)} steps started"


def expected(ids: list[int]) -> np.float32:
    return np.float32(np.float32(sum(ids)) / len(ids) / 1000)


def make(model, max_active_rows: int = 4, max_step_tokens: int = 8, max_queue_size: int = 100, **kwargs):
    return StepScheduler(model, lambda items: items, policy=StepPolicy(max_active_rows, max_step_tokens),
                         max_queue_size=max_queue_size, **kwargs)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 4 * WAIT))


def test_every_request_gets_its_own_answers_in_order() -> None:
    rng = np.random.default_rng(0)
    requests = [[rng.integers(1, 100, size=int(rng.integers(1, 40))).tolist() for _ in range(int(n))]
                for n in rng.integers(1, 6, size=30)]

    async def main():
        scheduler = make(SumModel(), max_active_rows=5, max_step_tokens=7)
        answers = await asyncio.gather(*(scheduler.submit(r) for r in requests))
        await scheduler.close()
        return answers

    for request, answer in zip(requests, run(main()), strict=True):
        np.testing.assert_allclose(answer, [expected(ids) for ids in request], rtol=1e-6)


def test_a_full_queue_refuses_at_once_and_a_cancelled_request_frees_its_places() -> None:
    async def main():
        model = SumModel(gated=True)
        scheduler = make(model, max_active_rows=1, max_queue_size=3)
        first = asyncio.ensure_future(scheduler.submit([[5] * 20]))
        await model.entered(1)  # first holds the only place; the queue is empty
        waiting = asyncio.ensure_future(scheduler.submit([[1], [2], [3]]))
        await asyncio.sleep(0)
        assert scheduler.queued_units == 3
        with pytest.raises(Overloaded, match="queue full"):
            await scheduler.submit([[4]])
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert scheduler.queued_units == 0  # at once, while the step still runs
        late = asyncio.ensure_future(scheduler.submit([[7], [8]]))
        model.allow(10)
        assert (await first)[0] == expected([5] * 20) and list(await late) == [expected([7]), expected([8])]
        await scheduler.close()
        return model

    model = run(main())
    assert all(1 not in firsts for firsts in model.firsts)  # the cancelled texts never ran


def test_a_cancelled_request_leaves_the_active_set_at_the_next_step() -> None:
    async def main():
        model = SumModel(gated=True)
        scheduler = make(model, max_active_rows=4, max_step_tokens=4)
        keep = asyncio.ensure_future(scheduler.submit([[3] * 12, [3] * 12]))  # two rows: steps of 4
        drop = asyncio.ensure_future(scheduler.submit([[9] * 12]))
        await model.entered(1)
        model.allow()
        await model.entered(2)
        assert sorted(model.firsts[1]) == [3, 3, 9]
        drop.cancel()
        await asyncio.sleep(0)
        model.allow(10)
        assert list(await keep) == [expected([3] * 12)] * 2
        await scheduler.close()
        return model

    model = run(main())
    assert len(model.firsts) > 2 and model.firsts[2:] == [[3, 3]] * (len(model.firsts) - 2)


def test_deadlines_are_checked_between_steps() -> None:
    now = [100.0]

    async def main():
        model = SumModel(gated=True)
        scheduler = make(model, max_active_rows=2, max_step_tokens=4, clock=lambda: now[0])
        running = asyncio.ensure_future(scheduler.submit([[4] * 12, [4] * 12], deadline=105.0))
        other = asyncio.ensure_future(scheduler.submit([[6] * 12]))
        await model.entered(1)
        stale = asyncio.ensure_future(scheduler.submit([[2]], deadline=101.0))
        now[0] = 110.0  # both deadlines pass during the step
        model.allow(10)
        with pytest.raises(DeadlineExpired, match="with 0 of 2 texts scored"):
            await running
        with pytest.raises(DeadlineExpired, match="waiting for the model"):
            await stale
        assert (await other)[0] == expected([6] * 12)
        await scheduler.close()
        return model

    model = run(main())
    assert model.firsts[1:] == [[6]] * (len(model.firsts) - 1)  # the expired row left; the stale one never ran


def test_a_single_request_is_not_held_up_by_a_bulk_request_or_long_reviews() -> None:
    async def main():
        model = SumModel(gated=True)
        scheduler = make(model, max_active_rows=4, max_step_tokens=8)
        bulk = asyncio.ensure_future(scheduler.submit([[7] * 200 for _ in range(20)]))
        await model.entered(1)
        single = asyncio.ensure_future(scheduler.submit([[1] * 5]))
        await asyncio.sleep(0)
        model.allow()
        await model.entered(2)
        model.allow()
        answer = await single  # one more step: it joined at once, read 5 tokens and left
        model.allow(1000)
        await bulk
        await scheduler.close()
        return model, answer

    model, answer = run(main())
    assert answer[0] == expected([1] * 5)
    assert [i for i, firsts in enumerate(model.firsts) if 1 in firsts] == [1]
    assert model.firsts[0] == [7, 7, 7]  # the bulk request took 3 of the 4 places, leaving one
    assert sorted(model.firsts[1]) == [1, 7, 7, 7] and max(model.steps[1]) <= 8


def test_waiting_requests_take_turns_so_a_multi_text_request_is_not_starved_by_new_arrivals() -> None:
    async def main():
        model = SumModel(gated=True)
        scheduler = make(model, max_active_rows=1)
        multi = asyncio.ensure_future(scheduler.submit([[50, 50], [51, 51], [52, 52]]))
        await model.entered(1)
        singles = [asyncio.ensure_future(scheduler.submit([[tag, tag]])) for tag in (1, 2, 3, 4)]
        await asyncio.sleep(0)
        model.allow(100)
        await asyncio.gather(multi, *singles)
        await scheduler.close()
        return model

    model = run(main())
    assert [firsts[0] for firsts in model.firsts] == [50, 51, 1, 2, 3, 4, 52]


def test_a_failing_step_fails_the_requests_in_it_and_the_scheduler_goes_on() -> None:
    async def main():
        scheduler = make(SumModel(fail_on=13), max_active_rows=8)
        results = await asyncio.gather(scheduler.submit([[13, 13]]), scheduler.submit([[1, 2]]),
                                       return_exceptions=True)
        after = await scheduler.submit([[4, 4]])
        await scheduler.close()
        return results, after

    results, after = run(main())
    assert isinstance(results[0], ValueError)
    assert isinstance(results[1], (ValueError, np.ndarray))  # failed only if it shared the poisoned step
    assert after[0] == expected([4, 4])


def test_close_finishes_admitted_work_and_refuses_the_rest_unless_draining() -> None:
    async def main(drain: bool):
        model = SumModel(gated=True)
        scheduler = make(model, max_active_rows=1)
        admitted = asyncio.ensure_future(scheduler.submit([[3] * 4]))
        await model.entered(1)
        queued = asyncio.ensure_future(scheduler.submit([[5]]))
        await asyncio.sleep(0)
        closing = asyncio.ensure_future(scheduler.close(drain=drain))
        await asyncio.sleep(0)
        with pytest.raises(ModelNotReady):
            await scheduler.submit([[1]])
        model.allow(10)
        await closing
        return await admitted, await asyncio.gather(queued, return_exceptions=True)

    done, (queued,) = run(main(drain=False))
    assert done[0] == expected([3] * 4) and isinstance(queued, ModelNotReady)
    done, (queued,) = run(main(drain=True))
    assert queued[0] == expected([5])


@pytest.mark.parametrize(("remaining", "waiting", "expected_k"), [
    ([300], False, 300),  # alone, nobody waiting: read to the end in one step
    ([300], True, 32),  # someone waits to join: bounded
    ([40, 50, 60], False, 32),
    ([3, 50, 60], False, 32),  # a row ending early is padded rather than cutting every row's step short
    ([20, 20, 20, 50], False, 20),  # stop where most rows end: no padding
])
def test_step_size_policy(remaining, waiting, expected_k) -> None:
    assert StepPolicy(8, 32).step_tokens(np.array(remaining), waiting) == expected_k


def test_observer_sees_every_step() -> None:
    records: list[StepRecord] = []

    class Observer:
        def queue_depth(self, units: int) -> None:
            pass

        def step_done(self, record: StepRecord) -> None:
            records.append(record)

    async def main():
        scheduler = make(SumModel(), max_active_rows=4, max_step_tokens=4, observer=Observer())
        await asyncio.gather(scheduler.submit([[1] * 6, [2] * 3]), scheduler.submit([[3] * 9]))
        await scheduler.close()

    run(main())
    assert sum(r.real_tokens for r in records) == 18
    assert sum(r.joins for r in records) == 3 and sum(r.finished for r in records) == 3
    assert all(r.real_tokens <= r.padded_tokens == r.rows * r.step_tokens for r in records)


# -- the real tiny model: same answer whole or in steps, alone or among any batch-mates
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    root: Path = build_tiny_repository(tmp_path_factory.mktemp("steps_repo"), steps=True, max_tokens=60)
    model = load_version(root, "imdb-lstm")
    tokenizer = model.load_tokenizer()
    whole = open_session(model, "fp32")

    def encode(texts: list[str]) -> list[list[int]]:
        return encode_texts(tokenizer, texts, model.max_tokens, model.head_tokens, model.unk_id)

    def alone(texts: list[str]) -> np.ndarray:
        return np.array([whole.run(None, dict(zip(("input_ids", "lengths"), pad_batch([ids], model.pad_id),
                                                  strict=True)))[0][0] for ids in encode(texts)])

    return open_step_runner(model), encode, alone


words = st.sampled_from(" ".join(SENTENCES).split() + ["zzz", "é", "!!"])
texts_strategy = st.lists(st.lists(words, min_size=1, max_size=80).map(" ".join), min_size=1, max_size=5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=st.lists(texts_strategy, min_size=1, max_size=6), rows=st.integers(1, 6),
       step_tokens=st.integers(1, 70), order=st.randoms(use_true_random=False))
def test_real_model_steps_give_each_text_its_whole_sequence_answer(tiny, requests, rows, step_tokens, order) -> None:
    runner, encode, alone = tiny
    arrival = list(range(len(requests)))
    order.shuffle(arrival)

    async def main():
        scheduler = StepScheduler(runner, encode, policy=StepPolicy(rows, step_tokens), max_queue_size=1000)
        tasks = {}
        for i in arrival:  # arrivals spread over the steps of the ones before
            tasks[i] = asyncio.ensure_future(scheduler.submit(requests[i]))
            await asyncio.sleep(0)
        answers = [await tasks[i] for i in range(len(requests))]
        await scheduler.close()
        return answers

    for texts, answer in zip(requests, run(main()), strict=True):
        np.testing.assert_allclose(answer, alone(texts), atol=1e-5, rtol=0)
