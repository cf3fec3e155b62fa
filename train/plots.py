"""PNG plots of a training run: curves, confusion matrix, ROC."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from train.metrics import confusion, roc_curve  # noqa: E402


def plot_curves(history: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch, train vs validation."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="binary cross-entropy", title="Loss")
    ax_acc.plot(epochs, [h["train_accuracy"] for h in history], "o-", label="train")
    ax_acc.plot(epochs, [h["val_accuracy"] for h in history], "o-", label="validation")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_perplexity(history: list[dict], path: Path) -> None:
    """Language-model perplexity (train window and validation) against tokens read."""
    tokens = [h["tokens"] / 1e6 for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(tokens, [h["train_perplexity"] for h in history], "o-", label="train (since previous point)")
    ax.plot(tokens, [h["val_perplexity"] for h in history], "o-", label="validation")
    ax.set(xlabel="tokens read (millions)", ylabel="perplexity (per subword)", title="Language-model pretraining",
           yscale="log")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(labels: np.ndarray, probabilities: np.ndarray, path: Path, title: str) -> None:
    """Confusion matrix with counts in each cell."""
    matrix = confusion(labels, probabilities)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues")
    names = ["negative", "positive"]
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=names, yticklabels=names,
           xlabel="predicted", ylabel="true", title=title)
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(col, row, str(count), ha="center", va="center",
                color="white" if count > matrix.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_roc(labels: np.ndarray, probabilities: np.ndarray, auc: float, path: Path, title: str) -> None:
    """ROC curve with its area."""
    fpr, tpr = roc_curve(labels, probabilities)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(fpr, tpr, label=f"AUC = {auc:.4f}")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
