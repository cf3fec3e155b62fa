"""Classification metrics computed with NumPy (no scikit-learn needed)."""

from __future__ import annotations

import numpy as np


def confusion(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """2x2 confusion matrix, rows = true label (neg, pos), columns = predicted."""
    predicted = (probabilities >= threshold).astype(int)
    matrix = np.zeros((2, 2), dtype=int)
    np.add.at(matrix, (labels.astype(int), predicted), 1)
    return matrix


def roc_curve(labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold, from (0, 0) to (1, 1)."""
    order = np.argsort(-probabilities, kind="mergesort")
    sorted_labels = labels[order]
    sorted_probs = probabilities[order]
    distinct = np.where(np.diff(sorted_probs))[0]
    cut = np.r_[distinct, len(sorted_labels) - 1]
    tps = np.cumsum(sorted_labels)[cut]
    fps = (cut + 1) - tps
    positives, negatives = max(tps[-1], 1), max(fps[-1], 1)
    return np.r_[0.0, fps / negatives], np.r_[0.0, tps / positives]


def summarize(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float | list[list[int]]]:
    """Accuracy, precision, recall, F1, ROC AUC and the confusion matrix."""
    matrix = confusion(labels, probabilities)
    (tn, fp), (fn, tp) = matrix
    precision = tp / max(tp + fp, 1)
    recall = tp / max(tp + fn, 1)
    fpr, tpr = roc_curve(labels, probabilities)
    return {
        "accuracy": float((tp + tn) / max(matrix.sum(), 1)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(2 * precision * recall / max(precision + recall, 1e-12)),
        "roc_auc": float(np.trapezoid(tpr, fpr)),
        "confusion_matrix": matrix.tolist(),
        "count": int(matrix.sum()),
    }
