"""The sentiment LSTM: embedding -> unidirectional LSTM -> pooling -> P(positive).

Two poolings, chosen by :attr:`ModelConfig.pooling`:

- ``"max_mean"`` (v1): masked max- and mean-pooled LSTM states plus the mean embedding.
- ``"streaming"`` (v2): the last hidden state, the running max, and an attention pooling
  ``sum_t softmax(w . h_t) h_t``. Every feature is computable as the review is read, with
  state of fixed size: the attention is a pair of running log-sum-exp accumulators (see
  :class:`StreamingPooler`), so the server can carry it across scheduling steps.

Constraints the export relies on: the network is a plain unidirectional ``nn.LSTM`` over
right-padded input (it exports to ONNX's fused LSTM operator), and pooling only reads the
real positions, so a review's score does not depend on the padding it carries in a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

POOLINGS = ("max_mean", "streaming")
MASKED = -1e4  # what padded positions become before a max or a softmax (never wins either)


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters that rebuild the network; saved inside every checkpoint."""

    vocab_size: int
    embedding_dim: int = 128
    hidden_size: int = 256
    num_layers: int = 1
    dropout: float = 0.4
    pad_id: int = 0
    pooling: str = "max_mean"  # v1's default, so v1 checkpoints (without this field) rebuild as trained

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling {self.pooling!r} is not one of {POOLINGS}")


ARCHITECTURES = {
    "max_mean": "embedding -> LSTM (unidirectional) -> masked max+mean pooling + mean embedding -> linear -> sigmoid",
    "streaming": "embedding -> LSTM (unidirectional) -> last state + running max + attention pooling "
                 "(running log-sum-exp) -> linear -> sigmoid",
}


class SentimentLSTM(nn.Module):
    """Returns the logit of P(positive) for ``input_ids [B, T]`` (int64) with ``lengths [B]`` (int64)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        # Attribute names as in v1 (embedding, lstm, head), so v1 checkpoints load unchanged.
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
        if config.pooling == "max_mean":
            # max- and mean-pooled states plus the mean embedding (a bag-of-subwords shortcut).
            self.head = nn.Linear(2 * config.hidden_size + config.embedding_dim, 1)
        else:
            self.attention = nn.Linear(config.hidden_size, 1)  # score of each step for the attention pooling
            self.head = nn.Linear(3 * config.hidden_size, 1)

    @property
    def architecture(self) -> str:
        """A one-line description for metadata and model cards."""
        return ARCHITECTURES[self.config.pooling]

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embedding_dropout(self.embedding(input_ids)), lengths)

    def classify(self, embedded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits [B] from embeddings ``[B, T, E]`` (the entry point adversarial training perturbs)."""
        outputs, _ = self.lstm(embedded)
        positions = torch.arange(embedded.shape[1], device=embedded.device)
        mask = (positions.unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(2)  # [B, T, 1]
        # Padded positions never win the max and add nothing to sums.
        max_pool = outputs.masked_fill(~mask, MASKED).amax(dim=1)
        if self.config.pooling == "max_mean":
            denominator = lengths.unsqueeze(1).to(outputs.dtype)
            mean_pool = (outputs * mask).sum(dim=1) / denominator
            mean_embedding = (embedded * mask).sum(dim=1) / denominator
            features = torch.cat([max_pool, mean_pool, mean_embedding], dim=1)
        else:
            last_index = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, outputs.shape[2])
            last = outputs.gather(1, last_index).squeeze(1)
            scores = self.attention(outputs).masked_fill(~mask, MASKED)  # [B, T, 1]
            attended = (torch.softmax(scores, dim=1) * outputs).sum(dim=1)
            features = torch.cat([last, max_pool, attended], dim=1)
        return self.head(self.head_dropout(features)).squeeze(1)


class StreamingPooler:
    """The ``"streaming"`` pooling computed one LSTM output at a time, with fixed-size state.

    ``step(h [B, H])`` folds in one time step; ``features()`` returns ``[B, 3H]`` equal (up to
    float rounding) to what :meth:`SentimentLSTM.classify` pools over the steps seen so far.
    The attention pooling is kept as running log-sum-exp accumulators: the running maximum
    score ``m``, the sum of ``exp(s_t - m)`` and the weighted sum of ``exp(s_t - m) h_t``.
    This is the reference a step-by-step server reproduces.
    """

    def __init__(self, model: SentimentLSTM) -> None:
        if model.config.pooling != "streaming":
            raise ValueError("StreamingPooler needs a model with pooling='streaming'")
        self.attention = model.attention
        self.last = self.max = self.score_max = self.weight_sum = self.weighted = None

    @torch.no_grad()
    def step(self, hidden: torch.Tensor) -> None:
        score = self.attention(hidden)  # [B, 1]
        if self.last is None:
            self.max, self.score_max = hidden.clone(), score
            self.weight_sum, self.weighted = torch.ones_like(score), hidden.clone()
        else:
            new_max = torch.maximum(self.score_max, score)
            decay, weight = torch.exp(self.score_max - new_max), torch.exp(score - new_max)
            self.weight_sum = self.weight_sum * decay + weight
            self.weighted = self.weighted * decay + weight * hidden
            self.score_max, self.max = new_max, torch.maximum(self.max, hidden)
        self.last = hidden

    def features(self) -> torch.Tensor:
        if self.last is None:
            raise ValueError("no step yet: a review has at least one token")
        return torch.cat([self.last, self.max, self.weighted / self.weight_sum], dim=1)


class ProbabilityModel(nn.Module):
    """Wraps a :class:`SentimentLSTM` to output P(positive); this is what gets exported."""

    def __init__(self, model: SentimentLSTM) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(input_ids, lengths))
