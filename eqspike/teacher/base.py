"""What the teacher modules share: the teacher (model, tokenizer, where it came from, its card), the
error a user can fix, and the two specs they take: ``TeacherSpec`` (which teacher, where fine-tuned
teachers are stored) and ``FineTuneRecipe`` (how a teacher without a task head is fine-tuned; the
stored teacher is keyed by it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import nn

from eqspike.errors import EqspikeError

CARD_NAME = "teacher_card.json"


class TeacherError(EqspikeError):
    """The teacher cannot be found or does not fit the task (the message says what to do)."""


@dataclass
class Teacher:
    model: nn.Module
    tokenizer: Any
    path: str  # where it was loaded from
    card: dict[str, Any]

    @property
    def score(self) -> float | None:
        return self.card.get("dev_score")


@dataclass(frozen=True)
class FineTuneRecipe:
    """Every setting a fine-tuned teacher depends on: at most ``epochs`` epochs of AdamW at ``lr``
    (``schedule``, linear warm-up over ``warmup_ratio``), stopped after ``patience`` epochs without a
    better selection score; the epoch kept is chosen on ``selection`` ('split': a held-out
    ``selection_fraction`` of the training data; 'dev')."""

    epochs: float = 10.0
    lr: float = 5e-5
    batch_size: int = 32
    schedule: str = "constant"
    patience: int = 2
    max_seq_length: int = 128
    warmup_ratio: float = 0.0
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 42
    selection: str = "split"
    selection_fraction: float | None = 0.1

    def key(self) -> dict[str, Any]:
        """The recipe as the store's key and the teacher card record it."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TeacherSpec:
    """Which teacher (``name``: a hub id or a local directory), where fine-tuned teachers are stored,
    the sequence length it must take, and how it is fine-tuned where it has no head for the task."""

    name: str
    store: str = "teachers"
    max_seq_length: int = 128
    recipe: FineTuneRecipe = FineTuneRecipe()
    eval_batch_size: int = 64
    logging_steps: int = 10
    max_train_examples: int | None = None  # recorded on the card of a teacher fine-tuned on a slice
