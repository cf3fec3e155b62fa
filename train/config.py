"""Training configuration: frozen objects with named presets, for fine-tuning and for pretraining.

``TrainConfig`` drives the classifier (``python -m train``); its defaults and the ``full``
preset are v1's recipe, unchanged. ``PretrainConfig`` drives language-model pretraining
(``python -m train pretrain``). Presets ``v2``/``v2-smoke`` fine-tune a pretrained encoder.
"""

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
    # v2 (defaults keep v1's recipe): pooling, and ULMFiT/Miyato fine-tuning of a pretrained encoder.
    pooling: str = "max_mean"  # "streaming": last state + running max + attention (see train.model)
    lr_decay_per_layer: float = 1.0  # discriminative LRs: head lr, LSTM lr/d, embedding lr/d**2 (1: one lr)
    unfreeze_every_steps: int = 0  # gradual unfreezing: one more layer group every N steps (0: all trainable)
    adversarial_epsilon: float = 0.0  # L2 norm of the adversarial embedding perturbation per review (0: off)
    adversarial_weight: float = 1.0  # weight of the adversarial loss beside the clean loss
    # Composed reviews (train.compose): memory / verdict-at-the-end augmentation from mined sentences.
    compose_fraction: float = 0.0  # composed reviews added, as a fraction of the training reviews (0: off)
    compose_teacher: str = ""  # the model-repository version folder that scores the mined sentences
    compose_mine_reviews: int = 8000  # training reviews (stratified subset) split into sentences and scored


PRESETS: dict[str, TrainConfig] = {
    "full": TrainConfig(),
    "smoke": TrainConfig(
        vocab_size=6000, embedding_dim=64, hidden_size=96, max_tokens=256, head_tokens=64,
        batch_size=32, learning_rate=3e-3, warmup_steps=20, max_epochs=3, patience=1,
        train_limit=6000, val_limit=1000, test_limit=1000,
    ),
}
PRESETS["v2"] = replace(PRESETS["full"], pooling="streaming", dropout=0.3, learning_rate=2e-3,
                        lr_decay_per_layer=2.6, unfreeze_every_steps=150, warmup_steps=100, max_epochs=4)
PRESETS["v2-smoke"] = replace(PRESETS["smoke"], pooling="streaming", lr_decay_per_layer=2.6,
                              unfreeze_every_steps=20)


@dataclass(frozen=True)
class PretrainConfig:
    """Language-model pretraining of the embedding + LSTM on train (labelled minus validation) + unsup text.

    The validation reviews that fine-tuning will carve (``val_fraction``, ``seed``) are left out
    of the language model's training text and serve as its validation text instead.
    """

    seed: int = 1234
    vocab_size: int = 16000
    embedding_dim: int = 128
    hidden_size: int = 256
    num_layers: int = 1
    dropout: float = 0.1
    max_tokens: int = 400  # each review's first max_tokens ids (the classifier reads at most 400 too)
    bptt: int = 70  # truncated back-propagation through time: steps per optimizer update
    batch_size: int = 64  # reviews read side by side; state carries across a review's bptt windows
    learning_rate: float = 3e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200
    grad_clip: float = 0.5
    max_epochs: int = 1
    max_steps: int = 0  # optimizer steps the learning-rate schedule decays over (0: max_epochs' worth)
    cutoffs: tuple[int, ...] = (2000, 6000)  # adaptive softmax clusters, over ids ranked by frequency
    val_fraction: float = 0.1  # must equal the fine-tuning run's, so its validation text stays unseen
    val_reviews: int = 500  # held-out reviews for the validation perplexity
    eval_every_steps: int = 250
    checkpoint_every_minutes: float = 5.0
    train_limit: int = 0  # 0: every labelled training review (minus validation); else a subset
    unsup_limit: int = 0  # 0: all 50,000 unlabelled reviews; else a subset
    threads: int = 0
    time_budget_minutes: float = 120.0  # stops (and saves) before a step would overrun it


PRETRAIN_PRESETS: dict[str, PretrainConfig] = {
    "full": PretrainConfig(),
    # Sizes match the v2-smoke fine-tuning preset (and v1's smoke preset).
    "smoke": PretrainConfig(vocab_size=6000, embedding_dim=64, hidden_size=96, max_tokens=128, bptt=64,
                            batch_size=32, warmup_steps=10, cutoffs=(1000, 3000), val_reviews=200,
                            eval_every_steps=20, train_limit=1000, unsup_limit=1000),
}


def preset(name: str, **overrides: object) -> TrainConfig:
    """The named fine-tuning preset with ``overrides`` (fields left as ``None`` are ignored)."""
    return _preset(PRESETS, name, overrides)


def pretrain_preset(name: str, **overrides: object) -> PretrainConfig:
    """The named pretraining preset with ``overrides`` (fields left as ``None`` are ignored)."""
    return _preset(PRETRAIN_PRESETS, name, overrides)


def _preset(presets: dict, name: str, overrides: dict[str, object]):
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
    return replace(presets[name], **{k: v for k, v in overrides.items() if v is not None})
