"""Triton-style model statistics: cumulative counts and durations, read by ``ModelStatistics``.

Where Prometheus (:mod:`serve.ops.metrics`) gives distributions for dashboards, this keeps the
plain totals Triton's statistics extension reports, which its clients (tritonclient's
``get_inference_statistics``, perf_analyzer's server-side breakdown) read and subtract
between two snapshots. The totals cover the version serving now: they restart from zero
when a version is loaded. Fed from the batcher's worker threads and the event loop, hence
the lock; each update is a few additions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Duration:
    """How many, and their total duration in nanoseconds."""

    count: int = 0
    ns: int = 0


@dataclass(frozen=True)
class BatchTotals:
    """Batches of one size: how many ran, and their total time in each phase (nanoseconds)."""

    count: int = 0
    input_ns: int = 0
    infer_ns: int = 0
    output_ns: int = 0


@dataclass(frozen=True)
class StatisticsSnapshot:
    """The totals at one instant (see ``ModelStatistics`` in protos/inference/grpc_predict_v2.proto)."""

    last_inference_ms: int = 0
    inference_count: int = 0  # texts scored
    execution_count: int = 0  # batches run
    success: Duration = Duration()
    fail: Duration = Duration()
    queue: Duration = Duration()
    # Tokenizing and padding, the model runs, labelling: each counted once per request of a
    # batch with the whole batch's time, as Triton counts them.
    compute_input: Duration = Duration()
    compute_infer: Duration = Duration()
    compute_output: Duration = Duration()
    batches: dict[int, BatchTotals] = field(default_factory=dict)  # texts per batch -> totals


def _ns(seconds: float) -> int:
    return max(0, round(seconds * 1e9))


class InferenceStatistics:
    """Thread-safe running totals for the served model version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Start again from zero (a new version is serving)."""
        with self._lock:
            self._last_inference_ms = self._texts = self._batches = 0
            # [count, ns] pairs, updated in place under the lock.
            self._success, self._fail, self._queue = [0, 0], [0, 0], [0, 0]
            self._phases = ([0, 0], [0, 0], [0, 0])  # input, infer, output
            self._by_size: dict[int, list[int]] = {}  # texts -> [batches, input ns, infer ns, output ns]

    def queued(self, queue_seconds: Sequence[float]) -> None:
        """Requests left the queue for a batch after waiting ``queue_seconds`` each."""
        queue_ns = sum(map(_ns, queue_seconds))
        with self._lock:
            self._queue[0] += len(queue_seconds)
            self._queue[1] += queue_ns

    def batch_done(self, texts: int, requests: int, input_s: float, infer_s: float, output_s: float) -> None:
        """A batch of ``requests`` requests and ``texts`` texts was scored, in three phases."""
        phase_ns = (_ns(input_s), _ns(infer_s), _ns(output_s))
        finished_ms = time.time_ns() // 1_000_000
        with self._lock:
            self._last_inference_ms = finished_ms
            self._texts += texts
            self._batches += 1
            size = self._by_size.setdefault(texts, [0, 0, 0, 0])
            size[0] += 1
            for total, ns, index in zip(self._phases, phase_ns, (1, 2, 3), strict=True):
                total[0] += requests
                total[1] += ns * requests
                size[index] += ns

    def request_done(self, ok: bool, seconds: float) -> None:
        """One inference request ended, answered (``ok``) or refused/failed, after ``seconds``."""
        ns = _ns(seconds)
        with self._lock:
            total = self._success if ok else self._fail
            total[0] += 1
            total[1] += ns

    def snapshot(self) -> StatisticsSnapshot:
        """The totals now, as an immutable value."""
        with self._lock:
            return StatisticsSnapshot(
                self._last_inference_ms, self._texts, self._batches, Duration(*self._success),
                Duration(*self._fail), Duration(*self._queue), *(Duration(*total) for total in self._phases),
                batches={size: BatchTotals(*totals) for size, totals in sorted(self._by_size.items())})
