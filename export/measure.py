"""Measurements recorded in a version's metadata: accuracy, parity, throughput, sizes."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

# The scorers live beside what they run (ONNX Runtime: runtime/, PyTorch: train/); export's
# measurements and tests reach them here too.
from runtime.scoring import cpu_session, length_sorted_batches, score_onnx
from train.reference import score_torch

__all__ = ["accuracy", "cpu_session", "length_sorted_batches", "score_onnx", "score_torch", "throughput"]


def throughput(sessions: dict[str, ort.InferenceSession], ids: Sequence[Sequence[int]], pad_id: int,
               rounds: int = 3) -> dict[str, float]:
    """Texts/s of each session on the same ids; rounds interleave the sessions so drift in
    machine load hits all of them alike. Reports each session's best round."""
    best = dict.fromkeys(sessions, 0.0)
    for _ in range(rounds):
        for name, session in sessions.items():
            started = time.perf_counter()
            score_onnx(session, ids, pad_id)
            best[name] = max(best[name], len(ids) / (time.perf_counter() - started))
    return best


def accuracy(probabilities: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> float:
    return float(((probabilities >= threshold) == labels).mean())
