"""Measurements recorded in a version's metadata: accuracy, parity, throughput, sizes."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort
import torch

from runtime.preprocessing import pad_batch
from train.batching import pad_batch as pad_batch_torch
from train.model import SentimentLSTM


def cpu_session(path: str, threads: int) -> ort.InferenceSession:
    """A CPU session with explicit thread counts (the default spins on every host core)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def length_sorted_batches(ids: Sequence[Sequence[int]], batch_size: int) -> list[np.ndarray]:
    order = np.argsort([len(s) for s in ids], kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def score_onnx(session: ort.InferenceSession, ids: Sequence[Sequence[int]], pad_id: int,
               batch_size: int = 64) -> np.ndarray:
    """P(positive) for every id list, in input order, batching by length."""
    out = np.zeros(len(ids), dtype=np.float32)
    for batch in length_sorted_batches(ids, batch_size):
        input_ids, lengths = pad_batch([ids[i] for i in batch], pad_id)
        out[batch] = session.run(None, {"input_ids": input_ids, "lengths": lengths})[0]
    return out


@torch.no_grad()
def score_torch(model: SentimentLSTM, ids: Sequence[Sequence[int]], pad_id: int, batch_size: int = 64) -> np.ndarray:
    """The PyTorch reference for parity checks."""
    model.eval()
    out = np.zeros(len(ids), dtype=np.float32)
    for batch in length_sorted_batches(ids, batch_size):
        input_ids, lengths = pad_batch_torch([ids[i] for i in batch], pad_id)
        out[batch] = torch.sigmoid(model(input_ids, lengths)).numpy()
    return out


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
