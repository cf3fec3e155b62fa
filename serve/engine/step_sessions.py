"""The step scheduler's sessions: one with every step thread for batches, and the faster one for a lone row.

A step of many rows runs on one ONNX Runtime session with every step thread (intra-op
parallelism splits the batch's matrix products; measured on this project's 2-core machine it
beats running shards of the rows on single-thread sessions side by side: bench/results and
docs/serving.md). A step of *one* row, a request alone in the server, is a chain of
matrix-vector products: whether a second thread helps depends on the CPU (on the 2-core AMD EPYC
used here one thread is faster without spinning threads), so it runs on whichever of the
batch session and a single-thread session read one row faster when the version was warmed up
(:func:`faster_for_one_row`): the CPU plan follows the load.

Rows never interact inside a step, so which session reads a row changes nothing in its answer
beyond the float rounding of the kernels (tests/serve/test_step_sessions.py: 1e-6).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from runtime.step_runner import State, StepRunner


def faster_for_one_row(candidates: Sequence[StepRunner], ids: np.ndarray, repeats: int = 5) -> StepRunner:
    """Of ``candidates``, the one that reads the single row ``ids`` int64 [1, T] fastest (best of ``repeats``)."""
    lengths = np.array([ids.shape[1]], dtype=np.int64)

    def best(runner: StepRunner) -> float:
        state, times = runner.initial_state(1), []
        for _ in range(repeats):
            started = time.perf_counter()
            runner.step(ids, lengths, state)
            times.append(time.perf_counter() - started)
        return min(times)

    return min(candidates, key=best)


class StepSessions:
    """A :class:`~runtime.row_plan.StepModel`: ``batch`` for steps of several rows, ``single`` for one row.

    ``step`` and ``head`` have :class:`StepRunner`'s shapes and dtypes.
    """

    def __init__(self, batch: StepRunner, single: StepRunner | None = None) -> None:
        self.batch = batch
        self.single = single or batch
        self.pad_id = batch.pad_id
        self.spec = batch.spec

    def sessions(self) -> list[StepRunner]:
        """Every distinct session (for warm-up)."""
        return [self.batch] if self.single is self.batch else [self.batch, self.single]

    def initial_state(self, rows: int) -> State:
        return self.batch.initial_state(rows)

    def step(self, input_ids: np.ndarray, step_lengths: np.ndarray, state: State) -> State:
        """Read ``step_lengths[b]`` (1..K) more tokens of each row of ``input_ids`` int64 [B, K]; the new state."""
        runner = self.single if len(input_ids) == 1 else self.batch
        return runner.step(input_ids, step_lengths, state)

    def head(self, state: State, lengths: np.ndarray) -> np.ndarray:
        """P(positive) float32 [B] of the rows in ``state`` that have read ``lengths`` int64 [B] tokens in all."""
        return self.batch.head(state, lengths)
