"""The task's data: loading (``tasks``), tokenised splits and their batches (``batches``), and the
task metrics (``metrics``)."""

from eqspike.data.batches import (
    EncodedSplit,
    batch_order,
    iterate_batches,
    sequential_batches,
)
from eqspike.data.metrics import compute_metrics
from eqspike.data.tasks import TASK_NAMES, DataError, Example, TaskData, load_task_data

__all__ = [
    "TASK_NAMES",
    "DataError",
    "EncodedSplit",
    "Example",
    "TaskData",
    "batch_order",
    "compute_metrics",
    "iterate_batches",
    "load_task_data",
    "sequential_batches",
]
