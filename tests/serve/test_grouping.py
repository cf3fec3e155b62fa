"""Length grouping: the split into model runs is optimal for the cost model, and the model is measured."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from runtime.repository import load_version
from runtime.run_cost import DEFAULT_RUN_COST, RunCost
from runtime.session import load_runner
from serve.engine.grouping import length_groups
from serve.ops.settings import Settings
from tests.fixtures.tiny_repository import NAME, build_tiny_repository


def total_cost(lengths: np.ndarray, groups: list[np.ndarray], cost: RunCost) -> float:
    return sum(cost.seconds(len(g), int(lengths[g].max())) for g in groups)


def brute_force_best(lengths: np.ndarray, max_rows: int, cost: RunCost) -> float:
    """Least cost over every split of the sorted rows into contiguous runs (exhaustive, small inputs)."""
    ordered = np.sort(lengths)
    n, best = len(ordered), math.inf
    for cuts in itertools.product((False, True), repeat=n - 1):
        bounds = [0, *[i + 1 for i, cut in enumerate(cuts) if cut], n]
        runs = [ordered[a:b] for a, b in itertools.pairwise(bounds)]
        if all(len(r) <= max_rows for r in runs):
            best = min(best, sum(cost.seconds(len(r), int(r.max())) for r in runs))
    return best


@pytest.mark.parametrize("cost", [DEFAULT_RUN_COST, RunCost(0.0, 1e-6, 20e-6), RunCost(1e-3, 6e-6, 0.0)])
def test_split_is_a_partition_within_max_rows_and_as_cheap_as_brute_force(cost: RunCost) -> None:
    rng = np.random.default_rng(7)
    for _ in range(60):
        lengths = rng.integers(1, 400, size=int(rng.integers(1, 10)))
        max_rows = int(rng.integers(1, 6))
        groups = length_groups(lengths, max_rows, cost)
        assert sorted(np.concatenate(groups).tolist()) == list(range(len(lengths)))
        assert all(1 <= len(g) <= max_rows for g in groups)
        assert total_cost(lengths, groups, cost) == pytest.approx(brute_force_best(lengths, max_rows, cost))


def test_cost_model_extremes_give_the_expected_splits() -> None:
    lengths = np.array([10, 400, 12, 390, 11])
    # Per-row work free (a GPU): everything in one run.
    assert [sorted(g.tolist()) for g in length_groups(lengths, 8, RunCost(1e-4, 1e-5, 0.0))] == [[0, 1, 2, 3, 4]]
    # Only per-row work and no call overhead: any padding is pure waste, so every text runs alone.
    assert all(len(g) == 1 for g in length_groups(lengths, 8, RunCost(0.0, 0.0, 1e-5)))
    # Call overhead worth two short rows: the three short texts share a run, the long ones too.
    split = [sorted(g.tolist()) for g in length_groups(lengths, 8, RunCost(200e-6, 0.0, 1e-5))]
    assert split == [[0, 2, 4], [1, 3]]
    assert length_groups(np.array([], dtype=np.int64), 8) == []


def test_measured_run_cost_is_usable(tmp_path: Path) -> None:
    repository = build_tiny_repository(tmp_path)
    model = load_version(repository, NAME)
    runner = load_runner(model, Settings(model_repository=repository, workers=1, intra_op_threads=1))
    runner.warm_up(4)
    cost = runner.measure_run_cost(4)
    assert all(math.isfinite(x) and x >= 0 for x in (cost.per_run, cost.per_step, cost.per_row_step))
    assert cost.per_step + cost.per_row_step > 0
    assert runner.measure_run_cost(1) == DEFAULT_RUN_COST  # one row per run: nothing to fit
