"""The modelled cost of one model run, by its shape (rows x padded length).

The server fits it at warm-up (:meth:`runtime.session.ModelRunner.measure_run_cost`), and its
engine splits batches into runs by it (``length_groups``).
"""

from __future__ import annotations

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
