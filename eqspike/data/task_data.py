"""A task's data as the rest of eqspike reads it: its examples (one or two texts and a label), its
training and dev splits, labels and metric; and the error that refuses data that cannot be loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from eqspike.errors import EqspikeError


class DataError(EqspikeError):
    """The task's data cannot be loaded as asked (message says why and what to do)."""


@dataclass
class Example:
    text_a: str
    text_b: str | None
    label: int | float


@dataclass
class TaskData:
    """A task's examples. ``validation`` maps split name -> examples; the first split is the one the
    best checkpoint is selected on (MNLI: matched)."""

    name: str
    train: list[Example]
    validation: dict[str, list[Example]]
    label_names: list[str] | None  # None for regression
    metric: str
    label_note: str = ""  # how the label type was decided (files: inferred, or set by label_type)

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def main_split(self) -> str:
        """The dev split whose metrics are reported bare (MNLI: matched, never mismatched)."""
        return next(iter(self.validation))
