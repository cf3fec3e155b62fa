"""The step scheduler's sessions (serve/engine/step_sessions.py): a lone row may run on another session,
with the same answer, and the faster session for one row is the one measured faster."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.repository import load_version
from runtime.step_runner import StepRunner, open_step_runner
from serve.engine.step_sessions import StepSessions, faster_for_one_row
from tests.fixtures.tiny_repository import NAME, build_tiny_repository


@pytest.fixture(scope="module")
def runners(tmp_path_factory: pytest.TempPathFactory) -> tuple[StepRunner, StepRunner]:
    """The tiny model's step graph on a two-thread and on a single-thread session."""
    model = load_version(build_tiny_repository(tmp_path_factory.mktemp("sessions"), steps=True), NAME)

    def runner(threads: int) -> StepRunner:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        opened = open_step_runner(model, options)
        assert opened is not None
        return opened

    return runner(2), runner(1)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(1, 6), min_size=1, max_size=6), st.integers(0, 2**31 - 1))
def test_every_row_gets_the_state_the_batch_session_gives_it(runners, step_lengths: list[int], seed: int) -> None:
    batch, single = runners
    sessions = StepSessions(batch, single)
    rng = np.random.default_rng(seed)
    lengths = np.array(step_lengths, dtype=np.int64)
    ids = rng.integers(4, 40, size=(len(lengths), int(lengths.max())), dtype=np.int64)
    state = batch.step(rng.integers(4, 40, size=(len(lengths), 3), dtype=np.int64),
                       np.full(len(lengths), 3, dtype=np.int64), batch.initial_state(len(lengths)))
    expected, got = batch.step(ids, lengths, state), sessions.step(ids, lengths, state)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-6, rtol=0)
    np.testing.assert_allclose(sessions.head(got, lengths + 3), batch.head(expected, lengths + 3), atol=1e-6)


def test_one_row_runs_on_the_single_session_and_more_on_the_batch_session(runners) -> None:
    batch, single = runners
    calls: list[str] = []

    class Recording:
        def __init__(self, runner: StepRunner, name: str) -> None:
            self.runner, self.name, self.pad_id, self.spec = runner, name, runner.pad_id, runner.spec

        def step(self, *args):
            calls.append(self.name)
            return self.runner.step(*args)

        def initial_state(self, rows: int):
            return self.runner.initial_state(rows)

    sessions = StepSessions(Recording(batch, "batch"), Recording(single, "single"))  # type: ignore[arg-type]
    for rows in (1, 2, 1):
        sessions.step(np.full((rows, 2), 5, np.int64), np.full(rows, 2, np.int64), batch.initial_state(rows))
    assert calls == ["single", "batch", "single"]
    assert StepSessions(batch).sessions() == [batch]


def test_the_faster_session_for_one_row_is_the_one_measured_faster(runners) -> None:
    batch, single = runners

    class Slow:
        """``single``, made slower than any real step."""

        def initial_state(self, rows: int):
            return single.initial_state(rows)

        def step(self, *args):
            import time

            time.sleep(0.01)
            return single.step(*args)

    slow = Slow()
    assert faster_for_one_row([slow, batch], np.full((1, 8), 5, np.int64), repeats=2) is batch  # type: ignore[list-item]
