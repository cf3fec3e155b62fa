"""The training loop: AdamW, warm-up + cosine schedule, clipping, early stopping, resume.

For fine-tuning a pretrained encoder (v2) it also does what ULMFiT (Howard & Ruder 2018)
found to matter: discriminative learning rates per layer group and gradual unfreezing from
the top; and, as an option, adversarial training on the embeddings (Miyato, Dai & Goodfellow
2017, "Adversarial training methods for semi-supervised text classification"). With
TrainConfig's defaults all three are off and the loop is v1's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn
from tqdm import tqdm

from runtime.preprocessing import encode_texts
from train.batching import length_grouped_batches, pad_batch, sorted_batches
from train.checkpoint import load_checkpoint, model_payload, save_atomic
from train.config import TrainConfig
from train.data import Review
from train.model import SentimentLSTM
from train.tokenizer import UNK_TOKEN


@dataclass
class Encoded:
    """A split turned into token ids, with labels."""

    ids: list[list[int]]
    labels: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(s) for s in self.ids])


def encode_split(tokenizer: Tokenizer, reviews: Sequence[Review], config: TrainConfig) -> Encoded:
    """Tokenize reviews exactly as serving will."""
    ids = encode_texts(tokenizer, [r.text for r in reviews], config.max_tokens, config.head_tokens,
                       tokenizer.token_to_id(UNK_TOKEN))
    return Encoded(ids, np.array([r.label for r in reviews], dtype=np.int64))


def preprocessing_of(config: TrainConfig) -> dict[str, Any]:
    return {"max_tokens": config.max_tokens, "head_tokens": config.head_tokens}


@torch.no_grad()
def predict(model: nn.Module, data: Encoded, batch_size: int, device: torch.device,
            desc: str | None = None) -> np.ndarray:
    """P(positive) for every review of ``data``, in its original order."""
    model.eval()
    probabilities = np.zeros(len(data.ids), dtype=np.float32)
    batches = sorted_batches(data.lengths, batch_size)
    for batch in tqdm(batches, desc=desc, leave=False, disable=desc is None):
        ids, lengths = pad_batch([data.ids[i] for i in batch])
        logits = model(ids.to(device), lengths.to(device))
        probabilities[batch] = torch.sigmoid(logits).float().cpu().numpy()
    return probabilities


def bce(probabilities: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(probabilities.astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def warmup_cosine(warmup: int, total: int):
    """Learning-rate multiplier: linear warm-up, then cosine decay to zero at ``total``."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


def layer_groups(model: SentimentLSTM) -> list[list[nn.Parameter]]:
    """Parameters from the top of the network down: [head (+ attention), LSTM, embedding]."""
    lower = {id(p) for p in model.lstm.parameters()} | {id(p) for p in model.embedding.parameters()}
    top = [p for p in model.parameters() if id(p) not in lower]
    return [top, list(model.lstm.parameters()), list(model.embedding.parameters())]


def adversarial_perturbation(loss: torch.Tensor, embedded: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Miyato et al.'s r_adv = epsilon * g / ||g||_2, per review, with g = d loss / d embeddings [B, T, E].

    Padded positions get no gradient (the LSTM is causal and pooling masks them), hence no perturbation.
    """
    (gradient,) = torch.autograd.grad(loss, embedded, retain_graph=True)
    norm = gradient.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, 1, 1)
    return (epsilon * gradient / norm).detach()


class Trainer:
    """Owns the model, optimizer and schedule for one run folder; resumable per epoch."""

    def __init__(self, model: SentimentLSTM, tokenizer: Tokenizer, config: TrainConfig,
                 train: Encoded, val: Encoded, out: Path, device: torch.device) -> None:
        self.model, self.tokenizer, self.config = model.to(device), tokenizer, config
        self.train_data, self.val_data, self.out, self.device = train, val, out, device
        self.groups = layer_groups(model)
        self.optimizer = torch.optim.AdamW(
            [{"params": params, "lr": config.learning_rate / config.lr_decay_per_layer ** depth}
             for depth, params in enumerate(self.groups)], lr=config.learning_rate, weight_decay=config.weight_decay)
        steps_per_epoch = math.ceil(len(train.ids) / config.batch_size)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(config.warmup_steps, steps_per_epoch * config.max_epochs))
        self.history: list[dict[str, float]] = []
        self.best_val_accuracy = -1.0
        self.stale_epochs = 0
        self.elapsed = 0.0  # training wall time, carried across resumes
        self.partial_fraction = 1.0  # share of the last epoch trained (< 1: stopped by the time budget)

    # --- checkpoints -------------------------------------------------------------------
    def _extra(self) -> dict[str, Any]:
        return {"train_config": asdict(self.config), "history": self.history}

    def save_last(self) -> None:
        payload = model_payload(self.model, self.tokenizer, preprocessing_of(self.config), self._extra())
        payload.update(optimizer_state=self.optimizer.state_dict(), scheduler_state=self.scheduler.state_dict(),
                       best_val_accuracy=self.best_val_accuracy, stale_epochs=self.stale_epochs,
                       elapsed=self.elapsed)
        save_atomic(payload, self.out / "last.pt")

    def save_best(self) -> None:
        save_atomic(model_payload(self.model, self.tokenizer, preprocessing_of(self.config), self._extra()),
                    self.out / "best.pt")

    def resume(self) -> None:
        """Continue from ``last.pt``: weights, optimizer, schedule, history, early-stop state."""
        payload = load_checkpoint(self.out / "last.pt")
        if payload["train_config"] != asdict(self.config):
            raise ValueError(f"{self.out / 'last.pt'} was made with another configuration; "
                             "resume with the same flags or use a new --out folder")
        self.model.load_state_dict(payload["model_state"])
        self.optimizer.load_state_dict(payload["optimizer_state"])
        self.scheduler.load_state_dict(payload["scheduler_state"])
        self.history = list(payload["history"])
        self.best_val_accuracy = payload["best_val_accuracy"]
        self.stale_epochs = payload["stale_epochs"]
        self.elapsed = payload["elapsed"]

    # --- the loop ------------------------------------------------------------------------
    def unfreeze(self, step: int) -> None:
        """Gradual unfreezing: the top group trains from step 0, one more group every N steps."""
        every = self.config.unfreeze_every_steps
        trainable = len(self.groups) if every <= 0 else 1 + step // every
        for depth, params in enumerate(self.groups):
            for param in params:
                param.requires_grad_(depth < trainable)

    def loss(self, ids: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, clean logits): binary cross-entropy, plus the adversarial term when enabled."""
        model, config = self.model, self.config
        embedded = model.embedding_dropout(model.embedding(ids))
        if config.adversarial_epsilon > 0 and not embedded.requires_grad:
            embedded.requires_grad_()  # embedding frozen: still perturb its output
        logits = model.classify(embedded, lengths)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, labels)
        if config.adversarial_epsilon > 0:
            perturbed = embedded + adversarial_perturbation(loss, embedded, config.adversarial_epsilon)
            adversarial = nn.functional.binary_cross_entropy_with_logits(model.classify(perturbed, lengths), labels)
            loss = loss + config.adversarial_weight * adversarial
        return loss, logits

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        """One pass over the training data; returns (mean loss, accuracy).

        Stops early (setting ``self.partial_fraction`` < 1) when finishing the batch after next
        and the validation pass (estimated as 6% of an epoch) would overrun the time budget.
        """
        config = self.config
        started, budget_s = time.perf_counter(), config.time_budget_minutes * 60
        self.partial_fraction = 1.0
        torch.manual_seed(config.seed * 1000 + epoch)  # dropout masks reproducible per epoch
        self.model.train()
        batches = length_grouped_batches(self.train_data.lengths, config.batch_size, config.seed * 1000 + epoch)
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(batches, desc=f"epoch {epoch}/{config.max_epochs}", unit="batch", leave=False)
        for done, batch in enumerate(bar):
            if done:
                spent = time.perf_counter() - started
                epoch_estimate = spent / done * len(batches)
                if self.elapsed + spent + spent / done + 0.06 * epoch_estimate > budget_s:
                    self.partial_fraction = done / len(batches)
                    tqdm.write(f"stopping epoch {epoch} after {done}/{len(batches)} batches: the "
                               f"{config.time_budget_minutes} min budget would overrun")
                    break
            ids, lengths = pad_batch([self.train_data.ids[i] for i in batch])
            labels = torch.from_numpy(self.train_data.labels[batch]).float().to(self.device)
            self.unfreeze(self.scheduler.last_epoch)  # LambdaLR's last_epoch counts optimizer steps
            loss, logits = self.loss(ids.to(self.device), lengths.to(self.device), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            total_loss += loss.item() * len(batch)
            correct += int(((logits > 0).float() == labels).sum())
            seen += len(batch)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}",
                            lr=f"{self.scheduler.get_last_lr()[0]:.2e}", refresh=False)
        return total_loss / seen, correct / seen

    def fit(self) -> None:
        """Train until max_epochs, early stopping, or the time budget; keeps best.pt."""
        config = self.config
        for epoch in range(len(self.history) + 1, config.max_epochs + 1):
            if self.stale_epochs >= config.patience:
                break
            mean_epoch = self.elapsed / max(1, len(self.history))
            if self.history and self.elapsed + mean_epoch > config.time_budget_minutes * 60:
                tqdm.write(f"stopping: another epoch would overrun the {config.time_budget_minutes} min budget")
                break
            started = time.perf_counter()
            train_loss, train_accuracy = self.train_epoch(epoch)
            val_probs = predict(self.model, self.val_data, config.eval_batch_size, self.device)
            val_accuracy = float(((val_probs >= 0.5) == self.val_data.labels).mean())
            self.elapsed += time.perf_counter() - started
            self.history.append({
                "epoch": epoch, "train_loss": train_loss, "train_accuracy": train_accuracy,
                "val_loss": bce(val_probs, self.val_data.labels), "val_accuracy": val_accuracy,
                "learning_rate": self.scheduler.get_last_lr()[0], "elapsed_s": self.elapsed,
                **({"completed_fraction": self.partial_fraction} if self.partial_fraction < 1 else {}),
            })
            improved = val_accuracy > self.best_val_accuracy
            if improved:
                self.best_val_accuracy, self.stale_epochs = val_accuracy, 0
                self.save_best()
            else:
                self.stale_epochs += 1
            self.save_last()
            tqdm.write(f"epoch {epoch}: train loss {train_loss:.4f} acc {train_accuracy:.4f} | "
                       f"val loss {self.history[-1]['val_loss']:.4f} acc {val_accuracy:.4f}"
                       f"{' (best)' if improved else ''} | {self.elapsed / 60:.1f} min")
            if self.partial_fraction < 1:
                break
