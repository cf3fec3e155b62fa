"""Language-model pretraining of the embedding + LSTM on IMDB's own text (``python -m train pretrain``).

Next-token prediction over review-sized sequences with truncated back-propagation through
time: a batch holds ``batch_size`` reviews (grouped by length), read in windows of ``bptt``
tokens; the LSTM state carries from one window to the next (detached) and starts at zero
at each review's first token, exactly as the classifier later reads a review. The output
layer is :class:`torch.nn.AdaptiveLogSoftmaxWithLoss` (Grave et al. 2017, "Efficient softmax
approximation for GPUs"), over token ids ranked by frequency, so a 16k vocabulary fits a CPU.

The text is the labelled training reviews minus the validation reviews that fine-tuning
will carve (same ``val_fraction`` and ``seed``), plus the 50,000 unlabelled reviews; the
held-out validation reviews give the validation perplexity. Test reviews are never read.

Outputs in the run folder: ``tokenizer.json``, ``last.pt`` (resumable, and what fine-tuning
reads with ``--pretrained``), ``pretrain_metrics.json`` and ``perplexity.png``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn
from tqdm import tqdm

from train import plots
from train.batching import length_grouped_batches, pad_batch, sorted_batches
from train.checkpoint import PRETRAINED_FORMAT, load_pretrained, save_atomic
from train.config import PretrainConfig
from train.data import UNSUP, read_reviews, stratified_split, stratified_subset
from train.loop import warmup_cosine
from train.model import ModelConfig
from train.pipeline import hardware, usable_cpus
from train.tokenizer import PAD_TOKEN, train_tokenizer


class LanguageModel(nn.Module):
    """Embedding + LSTM (named as in :class:`train.model.SentimentLSTM`) + adaptive softmax.

    ``rank_of_id [V]`` (int64) maps token ids to frequency ranks, the adaptive softmax's classes.
    """

    def __init__(self, config: ModelConfig, cutoffs: tuple[int, ...], rank_of_id: torch.Tensor) -> None:
        super().__init__()
        if config.hidden_size // 4 ** len(cutoffs) < 1 or list(cutoffs) != sorted(set(cutoffs)) \
                or cutoffs[-1] >= config.vocab_size:
            raise ValueError(f"adaptive softmax cutoffs {cutoffs} do not fit vocabulary {config.vocab_size} and "
                             f"hidden size {config.hidden_size} (each tail cluster divides the size by 4)")
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.pad_id)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(config.embedding_dim, config.hidden_size, num_layers=config.num_layers,
                            batch_first=True, dropout=config.dropout if config.num_layers > 1 else 0.0)
        self.output_dropout = nn.Dropout(config.dropout)
        self.softmax = nn.AdaptiveLogSoftmaxWithLoss(config.hidden_size, config.vocab_size, list(cutoffs),
                                                     div_value=4.0)
        self.register_buffer("rank_of_id", rank_of_id.clone())

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor,
                state: tuple[torch.Tensor, torch.Tensor] | None
                ) -> tuple[torch.Tensor, int, tuple[torch.Tensor, torch.Tensor]]:
        """Summed negative log-likelihood (nats) of ``targets [B, W]`` where ``valid [B, W]``.

        Returns (loss sum, number of predicted tokens, the LSTM state after the window).
        """
        outputs, state = self.lstm(self.embedding_dropout(self.embedding(inputs)), state)
        hidden = self.output_dropout(outputs)[valid]
        count = int(hidden.shape[0])
        if count == 0:
            return outputs.sum() * 0.0, 0, state
        result = self.softmax(hidden, self.rank_of_id[targets[valid]])
        return result.loss * count, count, state


def frequency_ranks(sequences: list[list[int]], vocab_size: int) -> torch.Tensor:
    """``rank_of_id [vocab_size]`` int64: 0 for the most frequent token id (ties by id)."""
    counts = np.bincount(np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]), minlength=vocab_size)
    order = np.lexsort((np.arange(vocab_size), -counts))  # by count descending, then id
    ranks = np.empty(vocab_size, dtype=np.int64)
    ranks[order] = np.arange(vocab_size)
    return torch.from_numpy(ranks)


def corpus(data_path: Path, config: PretrainConfig) -> tuple[list[str], list[str]]:
    """(training texts, validation texts): train minus validation + unsup; validation reviews."""
    reviews = read_reviews(data_path, ("train", UNSUP))
    train, val = stratified_split(reviews["train"], config.val_fraction, config.seed)
    if config.train_limit:
        train = stratified_subset(train, config.train_limit, config.seed)
    unsup = reviews[UNSUP]
    if config.unsup_limit:
        unsup = [unsup[i] for i in np.random.default_rng(config.seed).permutation(len(unsup))[:config.unsup_limit]]
    val = stratified_subset(val, config.val_reviews, config.seed)
    return [r.text for r in train] + [r.text for r in unsup], [r.text for r in val]


def encode_heads(tokenizer: Tokenizer, texts: list[str], max_tokens: int) -> list[list[int]]:
    """Each text's first ``max_tokens`` ids (at least two, so there is something to predict)."""
    encodings = tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    return [enc.ids[:max_tokens] for enc in encodings if len(enc.ids) >= 2]


class Pretrainer:
    """Owns the language model, optimizer and schedule for one run folder; resumable per step."""

    def __init__(self, model: LanguageModel, tokenizer: Tokenizer, config: PretrainConfig,
                 train: list[list[int]], val: list[list[int]], out: Path, device: torch.device) -> None:
        self.model, self.tokenizer, self.config = model.to(device), tokenizer, config
        self.train_ids, self.val_ids, self.out, self.device = train, val, out, device
        self.lengths = np.array([len(s) for s in train])
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                                           weight_decay=config.weight_decay)
        per_epoch = self.steps_in_epoch(1)
        total = config.max_steps or per_epoch * config.max_epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(config.warmup_steps, total))
        self.total_steps = total
        self.epoch, self.batch_index, self.step, self.tokens = 1, 0, 0, 0
        self.history: list[dict[str, float]] = []
        self.elapsed = 0.0

    def batches(self, epoch: int) -> list[np.ndarray]:
        return length_grouped_batches(self.lengths, self.config.batch_size, self.config.seed * 1000 + epoch)

    def steps_in_epoch(self, epoch: int) -> int:
        return sum(math.ceil((int(self.lengths[b].max()) - 1) / self.config.bptt) for b in self.batches(epoch))

    # --- checkpoints -------------------------------------------------------------------
    def save(self) -> None:
        """``last.pt``: the language model, optimizer, schedule and position (atomic write)."""
        save_atomic({
            "format": PRETRAINED_FORMAT, "model_config": asdict(self.model.config),
            "pretrain_config": asdict(self.config),
            "model_state": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "tokenizer_json": self.tokenizer.to_str(),
            "optimizer_state": self.optimizer.state_dict(), "scheduler_state": self.scheduler.state_dict(),
            "position": {"epoch": self.epoch, "batch_index": self.batch_index, "step": self.step,
                         "tokens": self.tokens},
            "history": self.history, "elapsed": self.elapsed,
        }, self.out / "last.pt")

    def resume(self) -> None:
        """Continue from ``last.pt`` at the batch where it stopped."""
        payload = load_pretrained(self.out / "last.pt")
        if json.loads(json.dumps(payload["pretrain_config"])) != json.loads(json.dumps(asdict(self.config))):
            raise ValueError(f"{self.out / 'last.pt'} was made with another configuration; "
                             "resume with the same flags or use a new --out folder")
        self.model.load_state_dict(payload["model_state"])
        self.optimizer.load_state_dict(payload["optimizer_state"])
        self.scheduler.load_state_dict(payload["scheduler_state"])
        position = payload["position"]
        self.epoch, self.batch_index = position["epoch"], position["batch_index"]
        self.step, self.tokens = position["step"], position["tokens"]
        self.history, self.elapsed = list(payload["history"]), payload["elapsed"]

    # --- the loop ------------------------------------------------------------------------
    def train_batch(self, batch: np.ndarray) -> tuple[float, int]:
        """Read one batch of reviews window by window; returns (summed NLL, predicted tokens)."""
        config = self.config
        torch.manual_seed(config.seed * 1_000_003 + self.step)  # dropout masks: same after a resume
        self.model.train()
        ids, lengths = pad_batch([self.train_ids[i] for i in batch])
        ids, lengths = ids.to(self.device), lengths.to(self.device)
        inputs, targets = ids[:, :-1], ids[:, 1:]
        valid = torch.arange(inputs.shape[1], device=self.device).unsqueeze(0) < (lengths - 1).unsqueeze(1)
        state, total, count = None, 0.0, 0
        for start in range(0, inputs.shape[1], config.bptt):
            window = slice(start, start + config.bptt)
            loss_sum, n, state = self.model(inputs[:, window], targets[:, window], valid[:, window], state)
            state = tuple(s.detach() for s in state)
            if n == 0:
                continue
            self.optimizer.zero_grad(set_to_none=True)
            (loss_sum / n).backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            total, count = total + loss_sum.item(), count + n
        return total, count

    @torch.no_grad()
    def validation_perplexity(self) -> float:
        self.model.eval()
        total, count = 0.0, 0
        lengths = np.array([len(s) for s in self.val_ids])
        for batch in sorted_batches(lengths, 64):
            ids, lens = pad_batch([self.val_ids[i] for i in batch])
            ids, lens = ids.to(self.device), lens.to(self.device)
            valid = torch.arange(ids.shape[1] - 1, device=self.device).unsqueeze(0) < (lens - 1).unsqueeze(1)
            loss_sum, n, _ = self.model(ids[:, :-1], ids[:, 1:], valid, None)
            total, count = total + loss_sum.item(), count + n
        return math.exp(total / max(count, 1))

    def record(self, train_nll: float, train_count: int) -> None:
        val_ppl = self.validation_perplexity()
        self.history.append({"step": self.step, "epoch": self.epoch, "tokens": self.tokens,
                             "train_perplexity": math.exp(train_nll / max(train_count, 1)),
                             "val_perplexity": val_ppl, "learning_rate": self.scheduler.get_last_lr()[0],
                             "elapsed_s": self.elapsed})
        tqdm.write(f"step {self.step}: train perplexity {self.history[-1]['train_perplexity']:.1f} | "
                   f"validation perplexity {val_ppl:.1f} | {self.tokens / 1e6:.2f}M tokens | "
                   f"{self.elapsed / 60:.1f} min")

    def fit(self) -> str:
        """Train until max_epochs, max_steps, or the time budget; returns why it stopped."""
        config = self.config
        budget_s = config.time_budget_minutes * 60
        last_save = time.perf_counter()
        window_nll, window_count, last_eval_step = 0.0, 0, self.step
        reason = "max_epochs"
        while self.epoch <= config.max_epochs:
            batches = self.batches(self.epoch)
            bar = tqdm(total=len(batches), initial=self.batch_index, desc=f"pretrain epoch {self.epoch}",
                       unit="batch", leave=False)
            while self.batch_index < len(batches):
                steps_done = max(self.step, 1)
                if config.max_steps and self.step >= config.max_steps:
                    reason = "max_steps"
                    break
                per_step = self.elapsed / steps_done
                windows = math.ceil((int(self.lengths[batches[self.batch_index]].max()) - 1) / config.bptt)
                if self.step and self.elapsed + per_step * (windows + 2) > budget_s:
                    reason = "time_budget"
                    break
                started = time.perf_counter()
                nll, count = self.train_batch(batches[self.batch_index])
                self.elapsed += time.perf_counter() - started
                self.batch_index += 1
                self.tokens += count
                window_nll, window_count = window_nll + nll, window_count + count
                bar.update(1)
                bar.set_postfix(ppl=f"{math.exp(window_nll / max(window_count, 1)):.1f}",
                                tok_s=f"{self.tokens / max(self.elapsed, 1e-9):.0f}",
                                lr=f"{self.scheduler.get_last_lr()[0]:.2e}", refresh=False)
                if self.step - last_eval_step >= config.eval_every_steps:
                    self.record(window_nll, window_count)
                    window_nll, window_count, last_eval_step = 0.0, 0, self.step
                if time.perf_counter() - last_save > config.checkpoint_every_minutes * 60:
                    self.save()
                    last_save = time.perf_counter()
            bar.close()
            if self.batch_index < len(batches):
                break
            self.epoch, self.batch_index = self.epoch + 1, 0
        if window_count:
            self.record(window_nll, window_count)
        self.save()
        return reason


def run_pretraining(data_path: Path, out: Path, config: PretrainConfig, device: torch.device,
                    resume: bool) -> dict[str, Any]:
    """Pretrain into ``out``; returns the metrics also written to ``pretrain_metrics.json``."""
    torch.set_num_threads(config.threads or usable_cpus())
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    train_texts, val_texts = corpus(data_path, config)
    tokenizer_path = out / "tokenizer.json"
    if resume and tokenizer_path.exists():
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
    else:
        tokenizer = train_tokenizer(train_texts, config.vocab_size)
        tokenizer.save(str(tokenizer_path))
    train_ids = encode_heads(tokenizer, train_texts, config.max_tokens)
    val_ids = encode_heads(tokenizer, val_texts, config.max_tokens)
    vocab_size = tokenizer.get_vocab_size()
    print(f"language-model text: {len(train_ids)} reviews, {sum(map(len, train_ids)) / 1e6:.2f}M tokens "
          f"(validation {len(val_ids)} reviews); vocabulary {vocab_size}")
    torch.manual_seed(config.seed)
    model_config = ModelConfig(vocab_size=vocab_size, embedding_dim=config.embedding_dim,
                               hidden_size=config.hidden_size, num_layers=config.num_layers,
                               dropout=config.dropout, pad_id=tokenizer.token_to_id(PAD_TOKEN))
    model = LanguageModel(model_config, config.cutoffs, frequency_ranks(train_ids, vocab_size))
    trainer = Pretrainer(model, tokenizer, config, train_ids, val_ids, out, device)
    if resume and (out / "last.pt").exists():
        trainer.resume()
        print(f"resumed at step {trainer.step} (epoch {trainer.epoch}, batch {trainer.batch_index})")
    reason = trainer.fit()
    metrics = {"config": asdict(config), "stopped": reason, "steps": trainer.step, "tokens": trainer.tokens,
               "schedule_steps": trainer.total_steps, "history": trainer.history,
               "final_val_perplexity": trainer.history[-1]["val_perplexity"] if trainer.history else None,
               "train_wall_time_s": trainer.elapsed, "total_wall_time_s": time.perf_counter() - started,
               "hardware": hardware(device)}
    plots.plot_perplexity(trainer.history, out / "perplexity.png")
    (out / "pretrain_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
