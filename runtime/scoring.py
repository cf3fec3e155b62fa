"""Scoring id lists with an ONNX Runtime session on the CPU, batched by length (export checks,
probes, benchmarks). No PyTorch, no server: the reference path that other paths are compared to."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from runtime.preprocessing import pad_batch


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
