"""A whole training run: data -> tokenizer -> model -> final evaluation -> metrics and plots."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from train import plots
from train.checkpoint import load_checkpoint, load_pretrained, restore_model
from train.config import TrainConfig
from train.data import Review, read_reviews, stratified_split, stratified_subset
from train.loop import Encoded, Trainer, bce, encode_split, predict
from train.metrics import summarize
from train.model import ModelConfig, SentimentLSTM
from train.tokenizer import PAD_TOKEN, train_tokenizer


def usable_cpus() -> int:
    """CPUs this process may run on (affinity), not the host's core count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def split_data(reviews: dict[str, list[Review]],
               config: TrainConfig) -> tuple[list[Review], list[Review], list[Review]]:
    """(train, validation, test); validation is carved from train, stratified and seeded."""
    train, val = stratified_split(reviews["train"], config.val_fraction, config.seed)
    if config.train_limit:
        train = stratified_subset(train, config.train_limit, config.seed)
    if config.val_limit:
        val = stratified_subset(val, config.val_limit, config.seed)
    test = reviews.get("test", [])
    if config.test_limit and test:
        test = stratified_subset(test, config.test_limit, config.seed)
    return train, val, test


def hardware(device: torch.device) -> dict[str, Any]:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus_usable": usable_cpus(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def evaluate_split(model: torch.nn.Module, data: Encoded, config: TrainConfig, device: torch.device,
                   name: str) -> tuple[dict[str, Any], np.ndarray]:
    probabilities = predict(model, data, config.eval_batch_size, device, desc=f"evaluating {name}")
    metrics = summarize(data.labels, probabilities)
    metrics["loss"] = bce(probabilities, data.labels)
    return metrics, probabilities


def check_pretrained(payload: dict[str, Any], config: TrainConfig) -> None:
    """Refuse an encoder whose shape differs from ``config`` or that read this run's validation text."""
    model, pre = payload["model_config"], payload["pretrain_config"]
    for field in ("embedding_dim", "hidden_size", "num_layers"):
        if model[field] != getattr(config, field):
            raise ValueError(f"the pretrained encoder has {field}={model[field]} but this configuration has "
                             f"{getattr(config, field)}; pretrain and fine-tune with matching sizes")
    if (pre["val_fraction"], pre["seed"]) != (config.val_fraction, config.seed):
        raise ValueError(f"the encoder was pretrained holding out val_fraction={pre['val_fraction']}, "
                         f"seed={pre['seed']}, but this run validates on val_fraction={config.val_fraction}, "
                         f"seed={config.seed}: its validation reviews would have been read in pretraining")


def encoder_state(payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The embedding and LSTM weights of a pretraining checkpoint (what fine-tuning starts from)."""
    return {k: v for k, v in payload["model_state"].items() if k.split(".")[0] in ("embedding", "lstm")}


def composed_reviews(train_reviews: list[Review], config: TrainConfig) -> list[Review]:
    """``config.compose_fraction`` x len(train_reviews) composed reviews (train.compose) from the training reviews.

    Raises ValueError without a teacher, or when the teacher is not a model-repository version.
    """
    from train.compose import compose_reviews, mine_sentences
    from train.probes import scorer_for_version

    if not config.compose_teacher:
        raise ValueError("--compose-fraction needs --compose-teacher, a model-repository version folder "
                         "(e.g. models/imdb-lstm/3) to score the mined sentences")
    score, _ = scorer_for_version(Path(config.compose_teacher), "fp32", config.threads or usable_cpus())
    mined = stratified_subset(train_reviews, config.compose_mine_reviews, config.seed)
    pool = mine_sentences(mined, score)
    composed = compose_reviews(train_reviews, pool, round(config.compose_fraction * len(train_reviews)), config.seed)
    print(f"composed {len(composed)} reviews from {pool.summary()} (teacher {config.compose_teacher})")
    return composed


def run_training(data_path: Path, out: Path, config: TrainConfig, device: torch.device, resume: bool,
                 tokenizer_file: Path | None = None, pretrained: Path | None = None) -> dict[str, Any]:
    """Train into ``out`` (best.pt, last.pt, metrics.json, plots) and return the metrics.

    ``tokenizer_file`` reuses an existing tokenizer instead of training one: the tokenizers
    trainer breaks ties between equally frequent merges in hash order, so two trainings on
    the same text can differ in a few rare tokens; reuse one file for bit-exact reruns.
    ``pretrained`` (a ``python -m train pretrain`` last.pt) supplies the tokenizer and the
    initial embedding + LSTM weights; raises ValueError if its sizes or held-out split differ.
    """
    payload = load_pretrained(pretrained) if pretrained is not None else None
    if payload is not None:
        check_pretrained(payload, config)
    torch.set_num_threads(config.threads or usable_cpus())
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    train_reviews, val_reviews, test_reviews = split_data(read_reviews(data_path), config)
    tokenizer_path = out / "tokenizer.json"
    if resume and tokenizer_path.exists():
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
    elif payload is not None:
        tokenizer = Tokenizer.from_str(payload["tokenizer_json"])
        tokenizer.save(str(tokenizer_path))
    elif tokenizer_file is not None:
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        tokenizer.save(str(tokenizer_path))
    else:
        tokenizer = train_tokenizer((r.text for r in train_reviews), config.vocab_size)
        tokenizer.save(str(tokenizer_path))
    if config.compose_fraction > 0:
        train_reviews = train_reviews + composed_reviews(train_reviews, config)
    train_data = encode_split(tokenizer, train_reviews, config)
    val_data = encode_split(tokenizer, val_reviews, config)
    print(f"train {len(train_reviews)} | validation {len(val_reviews)} | test {len(test_reviews)} reviews; "
          f"vocabulary {tokenizer.get_vocab_size()}; mean tokens {train_data.lengths.mean():.0f}")

    torch.manual_seed(config.seed)
    model = SentimentLSTM(ModelConfig(
        vocab_size=tokenizer.get_vocab_size(), embedding_dim=config.embedding_dim,
        hidden_size=config.hidden_size, num_layers=config.num_layers, dropout=config.dropout,
        pad_id=tokenizer.token_to_id(PAD_TOKEN), pooling=config.pooling))
    if payload is not None:
        loaded = model.load_state_dict(encoder_state(payload), strict=False)  # the head starts fresh
        if loaded.unexpected_keys or any(k.startswith(("embedding.", "lstm.")) for k in loaded.missing_keys):
            raise ValueError(f"{pretrained}: encoder weights do not fit the classifier "
                             f"(missing {loaded.missing_keys}, unexpected {loaded.unexpected_keys})")
    trainer = Trainer(model, tokenizer, config, train_data, val_data, out, device)
    if resume and (out / "last.pt").exists():
        trainer.resume()
        print(f"resumed after epoch {len(trainer.history)}")
    trainer.fit()

    best, _ = restore_model(load_checkpoint(out / "best.pt"))
    best.to(device)
    val_metrics, _ = evaluate_split(best, val_data, config, device, "validation")
    metrics: dict[str, Any] = {"config": asdict(config), "pretrained": str(pretrained) if pretrained else None,
                               "history": trainer.history,
                               "best_epoch": max(trainer.history, key=lambda h: h["val_accuracy"])["epoch"],
                               "validation": val_metrics, "train_wall_time_s": trainer.elapsed,
                               "hardware": hardware(device)}
    if test_reviews:
        test_data = encode_split(tokenizer, test_reviews, config)
        metrics["test"], test_probs = evaluate_split(best, test_data, config, device, "test")
        plots.plot_confusion(test_data.labels, test_probs, out / "confusion_test.png", "Test split")
        plots.plot_roc(test_data.labels, test_probs, metrics["test"]["roc_auc"], out / "roc_test.png", "Test split ROC")
    metrics["total_wall_time_s"] = time.perf_counter() - started
    plots.plot_curves(trainer.history, out / "curves.png")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def run_evaluation(checkpoint: Path, data_path: Path, split: str, limit: int, device: torch.device) -> dict[str, Any]:
    """Score one split (or a stratified subset of it) with a checkpoint."""
    payload = load_checkpoint(checkpoint)
    model, tokenizer = restore_model(payload)
    config = TrainConfig(**payload["train_config"])
    reviews = read_reviews(data_path, (split,))[split]
    if limit:
        reviews = stratified_subset(reviews, limit, config.seed)
    model.to(device)
    metrics, _ = evaluate_split(model, encode_split(tokenizer, reviews, config), config, device, split)
    return metrics
