"""Evaluating a classifier (teacher or spiking student) on a task's validation splits."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from eqspike.data import EncodedSplit, TaskData, compute_metrics, sequential_batches
from eqspike.training import progress

LogitsFn = Callable[[Mapping[str, Tensor]], Tensor]


@torch.no_grad()
def predict(logits_fn: LogitsFn, split: EncodedSplit, batch_size: int, device: torch.device, desc: str = "predict") -> np.ndarray:
    """Logits for every example of ``split``, in the split's order."""
    outputs: list[tuple[Tensor, Tensor]] = []
    batches = sequential_batches(split, batch_size)
    for batch in progress(batches, total=-(-len(split) // batch_size), desc=desc):
        index = batch.pop("index")
        labels = batch.pop("labels")  # noqa: F841  (not needed to predict)
        batch = {k: v.to(device) for k, v in batch.items()}
        outputs.append((index, logits_fn(batch).float().cpu()))
    order = torch.cat([i for i, _ in outputs]).argsort()
    return torch.cat([logits for _, logits in outputs])[order].numpy()


def metrics_from_logits(task: TaskData, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    labels = np.asarray(labels)
    predictions = logits.reshape(-1) if task.is_regression else logits.argmax(-1)
    return compute_metrics(task, predictions, labels)


def evaluate(
    logits_fn: LogitsFn,
    task: TaskData,
    splits: Mapping[str, EncodedSplit],
    batch_size: int,
    device: torch.device,
    desc: str = "eval",
) -> dict[str, float]:
    """Metrics of every validation split; the selection split's keys are bare ("accuracy"), the
    others are prefixed with the split name ("validation_mismatched/accuracy")."""
    metrics: dict[str, float] = {}
    for name, split in splits.items():
        values = metrics_from_logits(task, predict(logits_fn, split, batch_size, device, f"{desc} {name}"), split.labels)
        prefix = "" if name == task.selection_split else f"{name}/"
        metrics.update({prefix + key: value for key, value in values.items()})
    return metrics
