"""The modelled cost of one model run, by its shape (rows x padded length).

The server fits it at warm-up (:meth:`runtime.session.ModelRunner.measure_run_cost`), and its
engine splits batches into runs by it (``length_groups``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


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


# Measured on the shipped LSTM, one ONNX Runtime thread, 2-CPU x86-64 VM (runtime.session
# re-measures it at warm-up); used when warm-up is off.
DEFAULT_RUN_COST = RunCost(per_run=40e-6, per_step=6e-6, per_row_step=6e-6)


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
