"""Data-parallel steps (serve/engine/data_parallel.py): shards of a step's rows on separate
real ONNX Runtime sessions give every row the state one session gives it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.repository import load_version
from runtime.step_runner import StepRunner, open_step_runner
from serve.engine.data_parallel import DataParallelSteps, shard_bounds
from tests.fixtures.tiny_repository import NAME, build_tiny_repository


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> tuple[StepRunner, list[StepRunner]]:
    """One step runner with two threads and three single-thread ones, all of the tiny model."""
    model = load_version(build_tiny_repository(tmp_path_factory.mktemp("dp"), steps=True), NAME)

    def runner(threads: int) -> StepRunner:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        opened = open_step_runner(model, options)
        assert opened is not None
        return opened

    return runner(2), [runner(1) for _ in range(3)]


@given(st.lists(st.integers(1, 9), min_size=1, max_size=40), st.integers(1, 6))
def test_shard_bounds_cover_every_row_once_and_give_each_shard_one(lengths: list[int], shards: int) -> None:
    bounds = shard_bounds(np.array(lengths, dtype=np.int64), shards)
    assert bounds[0] == 0 and bounds[-1] == len(lengths)
    assert len(bounds) == min(shards, len(lengths)) + 1
    assert all(b > a for a, b in zip(bounds, bounds[1:], strict=False))


def test_shard_bounds_balance_real_tokens() -> None:
    lengths = np.array([8] * 4 + [1] * 16, dtype=np.int64)  # 32 + 16 tokens
    bounds = shard_bounds(lengths, 2)
    first, second = int(lengths[:bounds[1]].sum()), int(lengths[bounds[1]:].sum())
    assert abs(first - second) <= 8  # within one row's worth


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(1, 6), min_size=1, max_size=12), st.integers(1, 3), st.integers(0, 2**31 - 1))
def test_every_row_gets_the_state_one_session_gives_it(sessions, step_lengths: list[int], min_rows: int,
                                                       seed: int) -> None:
    lone, shards = sessions
    parallel = DataParallelSteps(shards, lone, min_rows_per_shard=min_rows)
    try:
        rng = np.random.default_rng(seed)
        lengths = np.array(step_lengths, dtype=np.int64)
        ids = rng.integers(4, 40, size=(len(lengths), int(lengths.max())), dtype=np.int64)
        # carried state from an earlier step, different per row
        state = lone.step(rng.integers(4, 40, size=(len(lengths), 3), dtype=np.int64),
                          np.full(len(lengths), 3, dtype=np.int64), lone.initial_state(len(lengths)))
        expected = lone.step(ids, lengths, state)
        got = parallel.step(ids, lengths, state)
        assert set(got) == set(expected)
        for name in expected:
            np.testing.assert_allclose(got[name], expected[name], atol=1e-6, rtol=0)
        np.testing.assert_allclose(parallel.head(got, lengths + 3), lone.head(expected, lengths + 3), atol=1e-6)
    finally:
        parallel.close()


def test_few_rows_run_on_the_lone_session(sessions) -> None:
    lone, shards = sessions

    class Counting:
        def __init__(self, runner: StepRunner) -> None:
            self.runner, self.calls, self.pad_id, self.spec = runner, 0, runner.pad_id, runner.spec

        def step(self, *args):
            self.calls += 1
            return self.runner.step(*args)

        def initial_state(self, rows: int):
            return self.runner.initial_state(rows)

    counted_lone, counted_shards = Counting(lone), [Counting(s) for s in shards[:2]]
    parallel = DataParallelSteps(counted_shards, counted_lone, min_rows_per_shard=2)  # type: ignore[arg-type]
    try:
        for rows in (1, 3, 4):
            parallel.step(np.full((rows, 2), 5, np.int64), np.full(rows, 2, np.int64), lone.initial_state(rows))
        assert counted_lone.calls == 2  # 1 and 3 rows: too few for two shards of two
        assert [s.calls for s in counted_shards] == [1, 1]  # 4 rows: two shards at once
    finally:
        parallel.close()
