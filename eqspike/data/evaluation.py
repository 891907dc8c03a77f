"""Evaluating a classifier (teacher or spiking student) on a task's validation splits."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from eqspike.data.batches import EncodedSplit, sequential_batches
from eqspike.data.metrics import compute_metrics
from eqspike.data.tasks import TaskData
from eqspike.runtime.distributed import Sharding
from eqspike.runtime.progress import progress

LogitsFn = Callable[[Mapping[str, Tensor]], Tensor]


@torch.no_grad()
def predict(
    logits_fn: LogitsFn,
    split: EncodedSplit,
    batch_size: int,
    device: torch.device,
    desc: str = "predict",
    sharding: Sharding = Sharding(),
) -> np.ndarray:
    """Logits for every example of ``split``, in the split's order. Under torchrun each rank runs
    every N-th batch and all ranks receive all logits."""
    outputs: list[tuple[Tensor, Tensor]] = []
    batches = sequential_batches(split, batch_size)
    total = -(-len(split) // batch_size)
    mine = -(-(total - sharding.rank) // sharding.world_size)
    bar = progress(total=mine, desc=desc, disable=None if sharding.is_main else True)
    for number, batch in enumerate(batches):
        if number % sharding.world_size != sharding.rank:
            continue
        index = batch.pop("index")
        batch.pop("labels")  # not needed to predict
        batch = {k: v.to(device) for k, v in batch.items()}
        outputs.append((index, logits_fn(batch).float().cpu()))
        bar.update(1)
    bar.close()
    if sharding.distributed:
        outputs = [pair for part in sharding.gather(outputs) for pair in part]
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
    sharding: Sharding = Sharding(),
) -> dict[str, float]:
    """Metrics of every split in ``splits``; the keys of the task's main dev split, or of a single split,
    are bare ("accuracy"), the others are prefixed with the split name ("validation_mismatched/accuracy"). Under torchrun the
    batches are spread over the ranks and every rank gets the same metrics."""
    metrics: dict[str, float] = {}
    for name, split in splits.items():
        logits = predict(logits_fn, split, batch_size, device, f"{desc} {name}", sharding)
        values = metrics_from_logits(task, logits, split.labels)
        prefix = "" if name == task.main_split or len(splits) == 1 else f"{name}/"
        metrics.update({prefix + key: value for key, value in values.items()})
    return metrics
