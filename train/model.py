"""The sentiment LSTM: embedding -> LSTM -> masked max+mean pooling -> P(positive).

Constraints the export relies on: the network is a plain unidirectional ``nn.LSTM`` over
right-padded input (it exports to ONNX's fused LSTM operator), and pooling only reads the
real positions, so a review's score does not depend on the padding it carries in a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters that rebuild the network; saved inside every checkpoint."""

    vocab_size: int
    embedding_dim: int = 128
    hidden_size: int = 256
    num_layers: int = 1
    dropout: float = 0.4
    pad_id: int = 0


class SentimentLSTM(nn.Module):
    """Returns the logit of P(positive) for ``input_ids [B, T]`` with ``lengths [B]``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.pad_id)
        self.embedding_dropout = nn.Dropout(config.dropout / 2)
        self.lstm = nn.LSTM(
            config.embedding_dim,
            config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.head_dropout = nn.Dropout(config.dropout)
        # Head reads the LSTM's max- and mean-pooled states plus the mean embedding (a
        # bag-of-subwords shortcut that lets the LSTM spend its capacity on word order).
        self.head = nn.Linear(2 * config.hidden_size + config.embedding_dim, 1)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        embedded = self.embedding_dropout(self.embedding(input_ids))
        outputs, _ = self.lstm(embedded)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        mask = (positions.unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(2)  # [B, T, 1]
        # Padded positions never win the max and add nothing to the mean.
        max_pool = outputs.masked_fill(~mask, -1e4).amax(dim=1)
        denominator = lengths.unsqueeze(1).to(outputs.dtype)
        mean_pool = (outputs * mask).sum(dim=1) / denominator
        mean_embedding = (embedded * mask).sum(dim=1) / denominator
        features = torch.cat([max_pool, mean_pool, mean_embedding], dim=1)
        return self.head(self.head_dropout(features)).squeeze(1)


class ProbabilityModel(nn.Module):
    """Wraps a :class:`SentimentLSTM` to output P(positive); this is what gets exported."""

    def __init__(self, model: SentimentLSTM) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(input_ids, lengths))
