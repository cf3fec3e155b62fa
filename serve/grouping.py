"""Split a batch of tokenized texts into model runs of similar length, at the least modelled cost.

A run pads every row to its longest one, and ONNX Runtime's LSTM computes padded steps like
real ones, so mixing a short review with a long one wastes work. Running each text alone
wastes more: a lone row costs about twice a row in a run of four (measured in
docs/serving.md). :class:`RunCost` models a run's time from its shape, and
:func:`length_groups` finds the split that minimises the total modelled time exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RunCost:
    """Modelled seconds of one model run of ``rows`` texts padded to ``length`` tokens.

    ``per_run + length * (per_step + per_row_step * rows)``: a fixed call overhead, the
    per-time-step work every run pays whatever its size (the recurrent weights are read each
    step), and the per-row part of each step. On CPU the two step terms are of the same size,
    so rows are worth merging even at some padding; on a GPU ``per_row_step`` is nearly
    zero and whole batches run together.
    """

    per_run: float
    per_step: float
    per_row_step: float

    def seconds(self, rows: int, length: int) -> float:
        """Modelled time of one run of ``rows`` texts padded to ``length`` tokens."""
        return self.per_run + length * (self.per_step + self.per_row_step * rows)


def fit_run_cost(best_time: Callable[[int, int], float], rows: int, short: int, long_: int) -> RunCost:
    """Fit a :class:`RunCost` to ``best_time(rows, length)`` (seconds) of 1 and ``rows`` rows at two lengths.

    A fit that comes out unusable (a noisy machine, rows == 1) falls back to
    :data:`DEFAULT_RUN_COST`; negative terms are clipped to zero.
    """
    if rows < 2 or long_ <= short:
        return DEFAULT_RUN_COST
    one_short = best_time(1, short)
    step_one = (best_time(1, long_) - one_short) / (long_ - short)
    step_many = (best_time(rows, long_) - best_time(rows, short)) / (long_ - short)
    per_row_step = max(0.0, (step_many - step_one) / (rows - 1))
    per_step = max(0.0, step_one - per_row_step)
    per_run = max(0.0, one_short - short * step_one)
    if not all(math.isfinite(x) for x in (per_run, per_step, per_row_step)) or per_step + per_row_step <= 0:
        return DEFAULT_RUN_COST
    return RunCost(per_run, per_step, per_row_step)


# Measured on the shipped LSTM, one ONNX Runtime thread, 2-CPU x86-64 VM (serve.runtime
# re-measures it at warm-up); used when warm-up is off.
DEFAULT_RUN_COST = RunCost(per_run=40e-6, per_step=6e-6, per_row_step=6e-6)


def length_groups(lengths: np.ndarray, max_rows: int, cost: RunCost = DEFAULT_RUN_COST) -> list[np.ndarray]:
    """Row indices split into runs of at most ``max_rows``, minimising the total ``cost`` of the runs.

    Rows are sorted by length, and an optimal split of sorted rows uses contiguous runs, so
    a dynamic programme over split points finds it exactly in O(rows x max_rows).
    """
    order = np.argsort(lengths, kind="stable")
    ordered = lengths[order].tolist()
    n = len(ordered)
    best = [0.0] * (n + 1)  # best[j]: least cost of the first j sorted rows
    cut = [0] * (n + 1)  # cut[j]: where the last run of that best split starts
    for end in range(1, n + 1):
        longest = ordered[end - 1]  # sorted: the last row of a run is its longest
        best[end] = float("inf")
        for start in range(max(0, end - max_rows), end):
            total = best[start] + cost.seconds(end - start, longest)
            if total < best[end]:
                best[end], cut[end] = total, start
    groups: list[np.ndarray] = []
    end = n
    while end > 0:
        groups.append(order[cut[end]:end])
        end = cut[end]
    return groups[::-1]
