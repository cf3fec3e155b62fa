"""The ONNX Runtime session: providers, threads, memory behaviour and warm-up.

Nothing here knows about requests or gRPC: :class:`ModelRunner` turns padded id arrays into
probabilities, and is built from a verified :class:`~serve.repository.ModelVersion`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from serve.errors import ConfigurationError
from serve.grouping import RunCost, fit_run_cost
from serve.repository import ModelVersion, open_session
from serve.settings import Settings

log = logging.getLogger("serve.runtime")
CGROUP_ROOT = Path("/sys/fs/cgroup")
WARMUP_BATCH, WARMUP_BATCH_LENGTH = 8, 64


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, self_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """CPUs allowed by the cgroup's CFS quota (v2 ``cpu.max`` or v1 ``cfs_quota_us``), or None if unlimited."""
    candidates = []
    try:  # cgroup v2: "0::/some/path"; the quota may sit at that path or at the namespace root
        for line in self_cgroup.read_text().splitlines():
            if line.startswith("0::"):
                candidates.append(root / line[3:].lstrip("/") / "cpu.max")
    except OSError:
        pass
    candidates.append(root / "cpu.max")
    for path in candidates:
        try:
            quota, period = path.read_text().split()[:2]
        except (OSError, ValueError):
            continue
        return None if quota == "max" else int(quota) / int(period)
    try:  # cgroup v1
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 else quota_us / period_us


def usable_cpus() -> int:
    """CPUs this process may really use: its affinity mask, capped by the cgroup quota (not the host's count)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(1, cpus)


def thread_plan(settings: Settings) -> tuple[int, int]:
    """(parallel model runs, ONNX Runtime threads per run); defaults share the usable CPUs out.

    One thread per run on every CPU is the default because this LSTM's runs are chains of
    small matrix products: splitting one across threads gains little, running several at once
    scales with the cores (measured in docs/serving.md).
    """
    cpus = usable_cpus()
    if settings.workers:
        return settings.workers, settings.intra_op_threads or max(1, cpus // settings.workers)
    if settings.intra_op_threads:  # threads per run given: as many runs as fit in the CPUs
        return max(1, cpus // settings.intra_op_threads), settings.intra_op_threads
    return cpus, 1


def session_options(settings: Settings) -> ort.SessionOptions:
    """Threads, graph optimisation and memory settings for the session."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = thread_plan(settings)[1]
    options.inter_op_num_threads = settings.inter_op_threads or 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Memory patterns are planned per input shape; with a new (batch, length) on nearly every
    # call they only accumulate, and so does the arena: both off keeps RSS flat.
    options.enable_mem_pattern = False
    options.enable_cpu_mem_arena = settings.cpu_arena
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.allow_spinning else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "1" if settings.allow_spinning else "0")
    options.log_severity_level = 3  # errors only; ORT warns about every unused initializer otherwise
    return options


def providers_for(settings: Settings) -> list[str | tuple[str, dict[str, str]]]:
    """The execution providers to ask for; refuses CUDA when it is missing unless fallback is allowed."""
    if settings.device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        message = (f"--device cuda, but this onnxruntime build ({ort.__version__}) has no CUDA execution provider "
                   f"(available: {ort.get_available_providers()}); install onnxruntime-gpu, or pass "
                   "--allow-cpu-fallback to run on CPU")
        if not settings.allow_cpu_fallback:
            raise ConfigurationError(message)
        log.warning("CUDA unavailable; falling back to CPU as --allow-cpu-fallback permits", extra={"reason": message})
        return ["CPUExecutionProvider"]
    # kSameAsRequested: grow the GPU arena by what is needed, not by doubling, so varied
    # sequence lengths do not ratchet memory up.
    cuda = {"device_id": "0", "arena_extend_strategy": "kSameAsRequested"}
    return [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]


@dataclass
class ModelRunner:
    """A loaded model version and its session; ``run`` is thread-safe (ONNX Runtime's ``run`` is)."""

    model: ModelVersion
    session: ort.InferenceSession
    device: str

    def run(self, input_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """P(positive) float32 [B] for right-padded ``input_ids`` int64 [B, T] and ``lengths`` int64 [B]."""
        return self.session.run(["probability"], {"input_ids": input_ids, "lengths": lengths})[0]

    def warm_up(self, max_batch_size: int) -> float:
        """Run every length bucket once (first runs allocate and pick kernels); returns seconds taken.

        Single rows over every bucket, then one small batch: a full batch at the longest
        length would cost a second of start-up for no further gain.
        """
        started = time.perf_counter()
        shapes = [(1, length) for length in warmup_lengths(self.model.max_tokens)]
        shapes.append((min(WARMUP_BATCH, max_batch_size), min(WARMUP_BATCH_LENGTH, self.model.max_tokens)))
        for batch, length in shapes:
            ids = np.full((batch, length), self.model.unk_id, dtype=np.int64)
            self.run(ids, np.full(batch, length, dtype=np.int64))
        return time.perf_counter() - started

    def measure_run_cost(self, rows: int, repeats: int = 3) -> RunCost:
        """Fit a :class:`~serve.grouping.RunCost` to runs of 1 and ``rows`` rows at two lengths (best of ``repeats``).

        About 30 ms for the shipped LSTM on CPU. A fit that comes out unusable (a noisy
        machine, rows == 1) falls back to the built-in figures, clipped terms to zero.
        """
        def best_time(batch: int, length: int) -> float:
            ids = np.full((batch, length), self.model.unk_id, dtype=np.int64)
            lengths = np.full(batch, length, dtype=np.int64)
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                self.run(ids, lengths)
                times.append(time.perf_counter() - started)
            return min(times)

        return fit_run_cost(best_time, rows, 16, min(128, self.model.max_tokens))


def warmup_lengths(max_tokens: int) -> list[int]:
    """Powers of four below ``max_tokens``, and ``max_tokens`` itself (1, 4, 16, 64, 256, ...)."""
    lengths, n = [], 1
    while n < max_tokens:
        lengths.append(n)
        n *= 4
    return [*lengths, max_tokens]


def load_runner(model: ModelVersion, settings: Settings) -> ModelRunner:
    """Open the session for ``settings.precision`` on ``settings.device`` and check what it got."""
    providers = providers_for(settings)
    session = open_session(model, settings.precision, session_options(settings), providers)
    device = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
    if settings.device == "cuda" and device != "cuda" and not settings.allow_cpu_fallback:
        # ORT drops to CPU silently when the CUDA libraries fail to load: say so instead.
        raise ConfigurationError(f"--device cuda: ONNX Runtime could not initialise CUDA (session providers "
                                 f"{session.get_providers()}); check the CUDA/cuDNN install or pass "
                                 "--allow-cpu-fallback")
    return ModelRunner(model, session, device)
