"""Data-parallel steps: one step of the active set split across several single-thread step sessions.

The step scheduler (:mod:`serve.engine.scheduler`) runs one step at a time on every active row.
An LSTM step is a chain of small matrix products: one ONNX Runtime call spread over two
intra-op threads gains little, while two calls on disjoint rows, one thread each, run at
once and scale with the cores (the same reason the whole-sequence path runs one
single-thread worker per CPU). :class:`DataParallelSteps` is a drop-in
:class:`~serve.engine.scheduler.StepModel`:

* with enough rows (``min_rows_per_shard`` per shard), a step's rows are cut into contiguous
  shards of about equal real tokens, one per shard session, run concurrently (the calling thread runs the
  first shard, a small pool the others) and their states concatenated back in row order;
* with fewer rows, e.g. a request alone in the server, the step runs on the *lone* session,
  which has every thread: the CPU plan follows the load.

Rows never interact inside a step (a row's result depends only on its own ids and state), so
where a row runs changes nothing in its answer beyond float rounding of the session's
kernels; tests/serve/test_data_parallel.py checks it to 1e-6 against one session.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from runtime.step_runner import State, StepRunner


def shard_bounds(step_lengths: np.ndarray, shards: int) -> list[int]:
    """Row boundaries ``[0, b1, ..., B]`` cutting rows into ``shards`` contiguous runs of about equal real tokens.

    ``step_lengths`` int64 [B]: tokens each row reads in this step (>= 1). Every shard gets at
    least one row (``shards`` is capped at B).
    """
    rows = len(step_lengths)
    shards = max(1, min(shards, rows))
    cumulative = np.cumsum(step_lengths)
    targets = cumulative[-1] * np.arange(1, shards) / shards
    cuts = np.searchsorted(cumulative, targets, side="left") + 1
    bounds = [0]
    for i, cut in enumerate(cuts.tolist()):
        # each shard keeps at least one row, and leaves one for each shard after it
        bounds.append(int(min(max(cut, bounds[-1] + 1), rows - (shards - 1 - i))))
    bounds.append(rows)
    return bounds


class DataParallelSteps:
    """A step model over ``shards`` (single-thread :class:`StepRunner` s of one version) and a ``lone`` one.

    ``step`` and ``head`` have :class:`StepRunner`'s shapes and dtypes. Call ``step`` from one
    thread at a time (the scheduler's); :meth:`close` stops the pool.
    """

    def __init__(self, shards: Sequence[StepRunner], lone: StepRunner | None = None,
                 min_rows_per_shard: int = 2) -> None:
        if not shards:
            raise ValueError("DataParallelSteps needs at least one shard session")
        self._shards = list(shards)
        self._lone = lone or self._shards[0]
        self._min_rows = max(1, min_rows_per_shard)
        self._pool = ThreadPoolExecutor(len(self._shards) - 1, thread_name_prefix="step_shard") \
            if len(self._shards) > 1 else None
        self.pad_id = self._shards[0].pad_id
        self.spec = self._shards[0].spec

    @property
    def shards(self) -> int:
        return len(self._shards)

    def initial_state(self, rows: int) -> State:
        return self._lone.initial_state(rows)

    def step(self, input_ids: np.ndarray, step_lengths: np.ndarray, state: State) -> State:
        """Read ``step_lengths[b]`` (1..K) more tokens of each row of ``input_ids`` int64 [B, K]; the new state."""
        shards = min(len(self._shards), len(input_ids) // self._min_rows)
        if shards <= 1 or self._pool is None:
            return self._lone.step(input_ids, step_lengths, state)
        bounds = shard_bounds(step_lengths, shards)
        parts = [(slice(a, b), runner) for (a, b), runner in zip(zip(bounds, bounds[1:], strict=False),
                                                                 self._shards, strict=False)]

        def run(part: tuple[slice, StepRunner]) -> State:
            rows, runner = part
            ids = input_ids[rows]
            width = int(step_lengths[rows].max())  # a shard of short rows reads no padding beyond them
            return runner.step(ids[:, :width], step_lengths[rows], {k: v[rows] for k, v in state.items()})

        futures = [self._pool.submit(run, part) for part in parts[1:]]
        results = [run(parts[0]), *(future.result() for future in futures)]
        return {name: np.concatenate([r[name] for r in results]) for name in results[0]}

    def head(self, state: State, lengths: np.ndarray) -> np.ndarray:
        """P(positive) float32 [B] of the rows in ``state`` that have read ``lengths`` int64 [B] tokens in all."""
        return self._lone.head(state, lengths)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
