"""Scoring against known labels: confusion counts that add up across chunks, and the metrics."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

_POSITIVE = {"positive", "pos", "1", "true", "yes"}
_NEGATIVE = {"negative", "neg", "0", "false", "no"}


def parse_gold(value: Any, labels: tuple[str, str] = ("negative", "positive")) -> int | None:
    """1 for a positive gold label, 0 for a negative one, None when unusable (blank, unknown).

    Accepts the model's own label names, pos/neg, 1/0, true/false (any case), and booleans.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return int(value) if value in (0, 1) else None
    text = str(value).strip().lower()
    if text in _POSITIVE or text == labels[1].lower():
        return 1
    if text in _NEGATIVE or text == labels[0].lower():
        return 0
    return None


@dataclass
class Confusion:
    """Counts of (gold, predicted) pairs; positive is the model's positive label."""

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0
    unlabeled: int = 0  # scored rows whose gold label was blank or not recognised

    def add(self, gold: int | None, predicted: int) -> None:
        if gold is None:
            self.unlabeled += 1
        elif gold == 1:
            if predicted == 1:
                self.tp += 1
            else:
                self.fn += 1
        elif predicted == 1:
            self.fp += 1
        else:
            self.tn += 1

    def merge(self, other: Confusion) -> None:
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    def metrics(self, labels: tuple[str, str] = ("negative", "positive")) -> dict[str, Any]:
        """Accuracy; precision, recall, F1 of the positive class; the confusion matrix.

        A ratio whose denominator is zero is reported as None rather than a made-up 0.
        """
        def ratio(num: int, den: int) -> float | None:
            return num / den if den else None

        precision, recall = ratio(self.tp, self.tp + self.fp), ratio(self.tp, self.tp + self.fn)
        f1 = (2 * precision * recall / (precision + recall)
              if precision is not None and recall is not None and precision + recall else None)
        negative, positive = labels
        return {
            "evaluated": self.total,
            "unlabeled": self.unlabeled,
            "accuracy": ratio(self.tp + self.tn, self.total),
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "positive_label": positive,
            # rows: gold label; columns: predicted label (scikit-learn's orientation).
            "confusion_matrix": {"labels": [negative, positive],
                                 "matrix": [[self.tn, self.fp], [self.fn, self.tp]]},
        }


def format_metrics(metrics: dict[str, Any]) -> str:
    """A short human-readable block for the terminal."""
    def show(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    negative, positive = metrics["confusion_matrix"]["labels"]
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]["matrix"]
    width = max(len(negative), len(positive), 9)
    lines = [
        f"evaluated {metrics['evaluated']} labelled rows ({metrics['unlabeled']} without a usable label)",
        f"accuracy  {show(metrics['accuracy'])}",
        f"precision {show(metrics['precision'])}  recall {show(metrics['recall'])}  "
        f"f1 {show(metrics['f1'])}  (positive class: {positive})",
        "confusion matrix (rows: gold, columns: predicted)",
        f"  {'':>{width}}  {negative:>{width}}  {positive:>{width}}",
        f"  {negative:>{width}}  {tn:>{width}}  {fp:>{width}}",
        f"  {positive:>{width}}  {fn:>{width}}  {tp:>{width}}",
    ]
    return "\n".join(lines)
