"""Split a batch of tokenized texts into model runs of similar length, at the least modelled cost.

A run pads every row to its longest one, and ONNX Runtime's LSTM computes padded steps like
real ones, so mixing a short review with a long one wastes work. Running each text alone
wastes more: a lone row costs about twice a row in a run of four (measured in
docs/serving.md). :class:`~runtime.run_cost.RunCost` models a run's time from its shape, and
:func:`length_groups` finds the split that minimises the total modelled time exactly.
"""

from __future__ import annotations

import numpy as np

from runtime.run_cost import DEFAULT_RUN_COST, RunCost


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
