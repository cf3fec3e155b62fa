"""Training configuration: one frozen object, with the named presets."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on besides the data path and output folder."""

    seed: int = 1234
    vocab_size: int = 16000
    embedding_dim: int = 128
    hidden_size: int = 256
    num_layers: int = 1
    dropout: float = 0.4
    max_tokens: int = 400  # longer reviews keep their head and tail (serving does the same)
    head_tokens: int = 128
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200
    grad_clip: float = 1.0
    max_epochs: int = 10
    patience: int = 2  # epochs without validation improvement before stopping
    val_fraction: float = 0.1
    train_limit: int = 0  # 0: the whole train split; else a stratified subset (smoke runs)
    val_limit: int = 0
    test_limit: int = 0
    eval_batch_size: int = 256
    threads: int = 0  # 0: all CPUs this process may use
    time_budget_minutes: float = 45.0  # stop before an epoch that would overrun it


PRESETS: dict[str, TrainConfig] = {
    "full": TrainConfig(),
    "smoke": TrainConfig(
        vocab_size=6000, embedding_dim=64, hidden_size=96, max_tokens=256, head_tokens=64,
        batch_size=32, learning_rate=3e-3, warmup_steps=20, max_epochs=3, patience=1,
        train_limit=6000, val_limit=1000, test_limit=1000,
    ),
}


def preset(name: str, **overrides: object) -> TrainConfig:
    """The named preset with ``overrides`` (fields left as ``None`` are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
