"""Length-grouped batches: little padding, reproducible order from a seed."""

from __future__ import annotations

import numpy as np
import torch

from runtime.preprocessing import pad_batch as pad_numpy


def length_grouped_batches(lengths: np.ndarray, batch_size: int, seed: int, pool: int = 50) -> list[np.ndarray]:
    """Shuffle, sort within pools of ``pool`` batches by length, cut, shuffle the batches.

    Grouping by length keeps padding small (a plain padded LSTM is many times faster than a
    packed one on CPU); the two shuffles keep batches varied from epoch to epoch.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    batches = []
    span = batch_size * pool
    for start in range(0, len(order), span):
        chunk = order[start:start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Batches in length order, for evaluation."""
    order = np.argsort(lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def pad_batch(sequences: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into ``(input_ids [B, T], lengths [B])`` int64 tensors, as serving does."""
    input_ids, lengths = pad_numpy(sequences, pad_id)
    return torch.from_numpy(input_ids), torch.from_numpy(lengths)
