"""The task metrics: accuracy (and F1 for binary tasks, Matthews correlation for CoLA), Pearson and
Spearman for regression.
"""

from __future__ import annotations

import numpy as np

from eqspike.data.tasks import TaskData


# ---------------------------------------------------------------------------- metrics
def compute_metrics(task: TaskData, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """All metrics of the task for one split: accuracy (+ F1 for binary tasks, Matthews correlation
    for CoLA); Pearson, Spearman and their mean for regression."""
    from scipy.stats import pearsonr, spearmanr

    if task.is_regression:
        predictions = predictions.reshape(-1).astype(float)
        pearson = float(pearsonr(predictions, labels)[0]) if np.std(predictions) > 0 else 0.0
        spearman = float(spearmanr(predictions, labels)[0]) if np.std(predictions) > 0 else 0.0
        return {"pearson": pearson, "spearmanr": spearman, "corr": (pearson + spearman) / 2}
    labels = labels.astype(int)
    metrics = {"accuracy": float((predictions == labels).mean())}
    if task.num_labels == 2:
        tp = int(((predictions == 1) & (labels == 1)).sum())
        fp = int(((predictions == 1) & (labels == 0)).sum())
        fn = int(((predictions == 0) & (labels == 1)).sum())
        metrics["f1"] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    if task.metric == "mcc" or task.name == "cola":
        metrics["mcc"] = _matthews(predictions, labels)
    return metrics


def _matthews(predictions: np.ndarray, labels: np.ndarray) -> float:
    tp = float(((predictions == 1) & (labels == 1)).sum())
    tn = float(((predictions == 0) & (labels == 0)).sum())
    fp = float(((predictions == 1) & (labels == 0)).sum())
    fn = float(((predictions == 0) & (labels == 1)).sum())
    denominator = ((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)) ** 0.5
    return (tp * tn - fp * fn) / denominator if denominator else 0.0
