"""Row plans (runtime/row_plan.py): snapshots and branches, run alone and by the step scheduler among
other requests' rows, on the real tiny step graph; Explain's plans equal scoring each text whole."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.explain import explanation_plans
from runtime.preprocessing import encode_texts, pad_batch
from runtime.repository import load_version, open_session
from runtime.row_plan import RowPlan, Snapshot, count_rows, run_plans
from runtime.step_runner import open_step_runner
from serve.engine.scheduler import StepPolicy, StepScheduler
from tests.fixtures.tiny_repository import NAME, SENTENCES, build_tiny_repository

WAIT = 40.0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """The tiny model's step runner, tokenizer-based encode, and a whole-graph scorer of id lists."""
    model = load_version(build_tiny_repository(tmp_path_factory.mktemp("plans"), steps=True, max_tokens=80), NAME)
    tokenizer = model.load_tokenizer()
    whole = open_session(model, "fp32")

    def encode(texts: list[str]) -> list[list[int]]:
        return encode_texts(tokenizer, texts, model.max_tokens, model.head_tokens, model.unk_id)

    def score(ids: list[int]) -> float:
        input_ids, lengths = pad_batch([ids], model.pad_id)
        return float(whole.run(None, {"input_ids": input_ids, "lengths": lengths})[0][0])

    runner = open_step_runner(model)
    assert runner is not None
    return runner, encode, score, model.unk_id


def expected_explanation(read: list[int], segments, cuts, score, unk_id: int) -> list[float]:
    """Slots of explanation_plans computed the slow way: every prefix and every text-without-a-segment scored whole."""
    running = [score(read[:cut]) for cut in cuts]
    without = [score(read[:b] + read[e:]) if len(read) > e - b else score([unk_id]) for _, b, e in segments]
    return running + without


def split(read: list[int], cuts: list[int]) -> list[tuple[int, int, int]]:
    bounds = [0, *cuts]
    return [(i, a, b) for i, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False))]


ids_strategy = st.lists(st.integers(4, 40), min_size=1, max_size=60)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(read=ids_strategy, data=st.data())
def test_explanation_plans_alone_equal_scoring_every_prefix_and_every_cut_text_whole(tiny, read, data) -> None:
    runner, _, score, unk_id = tiny
    ends = sorted(data.draw(st.sets(st.integers(1, len(read) - 1), max_size=8))) if len(read) > 1 else []
    segments = split(read, [*ends, len(read)])
    per_token = data.draw(st.booleans())
    cuts = list(range(1, len(read) + 1)) if per_token else [e for _, _, e in segments]
    roots = explanation_plans(read, segments, cuts, unk_id)
    assert count_rows(roots) <= len(segments) + 1
    got = run_plans(runner, roots, len(cuts) + len(segments))
    np.testing.assert_allclose(got, expected_explanation(read, segments, cuts, score, unk_id), atol=1e-5, rtol=0)


def test_plans_that_leave_a_slot_empty_or_fill_one_twice_are_refused(tiny) -> None:
    runner = tiny[0]
    ids = np.array([5, 6, 7], dtype=np.int64)
    with pytest.raises(ValueError, match="unfilled"):
        run_plans(runner, [RowPlan(ids, 0)], 2)
    with pytest.raises(ValueError, match="filled twice"):
        run_plans(runner, [RowPlan(ids, 0, stops={1: (Snapshot(0),)})], 1)
    with pytest.raises(ValueError, match="starts at offset 2"):
        RowPlan(ids, 0, stops={2: (RowPlan(ids, 1, offset=1),)})
    with pytest.raises(ValueError, match="outside"):
        RowPlan(ids, 0, stops={3: (Snapshot(1),)})


words = st.sampled_from(" ".join(SENTENCES).split() + ["zzz", "!!"])
texts_strategy = st.lists(st.lists(words, min_size=1, max_size=60).map(" ".join), min_size=1, max_size=4)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(read=ids_strategy, cut_fractions=st.lists(st.floats(0.05, 0.95), max_size=6),
       requests=st.lists(texts_strategy, max_size=5), rows=st.integers(1, 6), step_tokens=st.integers(1, 40),
       order=st.randoms(use_true_random=False))
def test_the_scheduler_runs_plans_among_other_rows_to_the_same_answers(tiny, read, cut_fractions, requests, rows,
                                                                       step_tokens, order) -> None:
    """Any place limit and step size, predictions arriving before and after: every answer as alone."""
    runner, encode, score, unk_id = tiny
    ends = sorted({int(f * len(read)) for f in cut_fractions} - {0, len(read)})
    segments = split(read, [*ends, len(read)])
    cuts = [e for _, _, e in segments]
    roots = explanation_plans(read, segments, cuts, unk_id)
    slots = len(cuts) + len(segments)
    alone = run_plans(runner, roots, slots)
    position = order.randint(0, len(requests))

    async def main():
        scheduler = StepScheduler(runner, encode, policy=StepPolicy(rows, step_tokens), max_queue_size=1000)
        tasks = [asyncio.ensure_future(scheduler.submit(texts)) for texts in requests[:position]]
        await asyncio.sleep(0)
        plan_task = asyncio.ensure_future(scheduler.submit_plans(roots, slots))
        tasks += [asyncio.ensure_future(scheduler.submit(texts)) for texts in requests[position:]]
        answers = await asyncio.wait_for(asyncio.gather(plan_task, *tasks), WAIT)
        await scheduler.close()
        return answers

    explained, *predicted = asyncio.run(main())
    np.testing.assert_allclose(explained, alone, atol=1e-6, rtol=0)
    for texts, answer in zip(requests, predicted, strict=True):
        np.testing.assert_allclose(answer, [score(ids) for ids in encode(texts)], atol=1e-5, rtol=0)


class Gated:
    """The real step runner, but each step waits for the test's permission (no sleeps, no races)."""

    def __init__(self, runner) -> None:
        self.runner, self.pad_id = runner, runner.pad_id
        self.permits, self.entered = threading.Semaphore(0), threading.Semaphore(0)

    def initial_state(self, rows: int):
        return self.runner.initial_state(rows)

    def step(self, *args):
        self.entered.release()
        assert self.permits.acquire(timeout=WAIT), "the test never allowed the step"
        return self.runner.step(*args)

    def head(self, *args):
        return self.runner.head(*args)


def test_a_cancelled_plan_request_frees_its_rows_and_branches(tiny) -> None:
    runner, encode, score, unk_id = tiny
    read = list(range(4, 40))
    segments = split(read, [6, 12, 18, 24, 30, len(read)])
    roots = explanation_plans(read, segments, [e for _, _, e in segments], unk_id)
    gated = Gated(runner)

    async def main():
        scheduler = StepScheduler(gated, encode, policy=StepPolicy(2, 1), max_queue_size=100)
        task = asyncio.ensure_future(scheduler.submit_plans(roots, 2 * len(segments)))
        assert await asyncio.to_thread(gated.entered.acquire, timeout=WAIT)  # its first step is running
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert scheduler.queued_units == 0  # its waiting rows went at once
        other = asyncio.ensure_future(scheduler.submit(["a fine film"]))
        for _ in range(50):  # the scheduler goes on: the cancelled rows leave, the new text is read
            gated.permits.release()
        answer = await asyncio.wait_for(other, WAIT)
        assert scheduler.active_rows == 0 and scheduler.queued_units == 0
        await scheduler.close()
        return answer

    np.testing.assert_allclose(asyncio.run(main()), [score(encode(["a fine film"])[0])], atol=1e-5)
