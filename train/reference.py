"""The PyTorch reference scorer (parity checks against ONNX Runtime, probes on checkpoints)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from runtime.scoring import length_sorted_batches
from train.batching import pad_batch as pad_batch_torch
from train.model import SentimentLSTM


@torch.no_grad()
def score_torch(model: SentimentLSTM, ids: Sequence[Sequence[int]], pad_id: int, batch_size: int = 64) -> np.ndarray:
    """The PyTorch reference for parity checks."""
    model.eval()
    out = np.zeros(len(ids), dtype=np.float32)
    for batch in length_sorted_batches(ids, batch_size):
        input_ids, lengths = pad_batch_torch([ids[i] for i in batch], pad_id)
        out[batch] = torch.sigmoid(model(input_ids, lengths)).numpy()
    return out
