"""Checkpoint files: ``last.pt`` (everything needed to resume) and ``best.pt`` (the model).

A checkpoint rebuilds its own model: it holds the model hyperparameters, the weights, the
tokenizer (as JSON text) and the preprocessing settings. Only tensors and plain Python
values are stored, so it loads with ``torch.load(weights_only=True)`` (no pickle code).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from train.model import ModelConfig, SentimentLSTM

FORMAT = "imdb-lstm-checkpoint/1"
PRETRAINED_FORMAT = "imdb-lstm-pretrained/1"  # `python -m train pretrain`'s last.pt (train.pretrain)


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """Write via a temporary file and rename, so an interruption never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def model_payload(model: SentimentLSTM, tokenizer: Tokenizer, preprocessing: dict[str, Any],
                  extra: dict[str, Any]) -> dict[str, Any]:
    """The self-contained description of a trained model."""
    return {
        "format": FORMAT,
        "model_config": asdict(model.config),
        "model_state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "tokenizer_json": tokenizer.to_str(),
        "preprocessing": preprocessing,
        **extra,
    }


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely, with a clear error for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} checkpoint (format={payload.get('format')!r})")
    return payload


def load_pretrained(path: str | Path) -> dict[str, Any]:
    """Load a language-model pretraining checkpoint safely, with a clear error for a wrong file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no pretraining checkpoint at {path}; run `python -m train pretrain` first")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zipfile and runtime errors for a foreign file
        raise ValueError(f"{path} is not a {PRETRAINED_FORMAT} checkpoint ({type(exc).__name__}); "
                         "--pretrained wants the last.pt of a `python -m train pretrain` run") from exc
    if not isinstance(payload, dict) or payload.get("format") != PRETRAINED_FORMAT:
        raise ValueError(f"{path} is not a {PRETRAINED_FORMAT} checkpoint (format={payload.get('format')!r}); "
                         "--pretrained wants the last.pt of a `python -m train pretrain` run")
    return payload


def restore_model(payload: dict[str, Any]) -> tuple[SentimentLSTM, Tokenizer]:
    """Rebuild the network (in eval mode) and its tokenizer from a checkpoint payload."""
    model = SentimentLSTM(ModelConfig(**payload["model_config"]))
    model.load_state_dict(payload["model_state"])
    model.eval()
    return model, Tokenizer.from_str(payload["tokenizer_json"])
