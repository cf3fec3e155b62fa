import numpy as np

from train.metrics import summarize


def test_summary_on_known_values():
    labels = np.array([0, 0, 1, 1])
    probabilities = np.array([0.1, 0.6, 0.4, 0.9])
    s = summarize(labels, probabilities)
    assert s["confusion_matrix"] == [[1, 1], [1, 1]]
    assert s["accuracy"] == s["precision"] == s["recall"] == s["f1"] == 0.5
    assert s["roc_auc"] == 0.75  # 3 of the 4 (pos, neg) pairs ranked right


def test_perfect_ranking_has_auc_one():
    assert summarize(np.array([0, 1, 1]), np.array([0.2, 0.7, 0.8]))["roc_auc"] == 1.0
