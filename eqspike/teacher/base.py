"""What the teacher modules share: the teacher (model, tokenizer, where it came from, its card), the
error a user can fix, and the recipe a fine-tuned teacher is keyed by.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from eqspike.config import RunConfig
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


def recipe_of(config: RunConfig) -> dict[str, Any]:
    """Every setting the fine-tuned teacher depends on."""
    return {"epochs": config.teacher_epochs, "lr": config.teacher_lr, "batch_size": config.teacher_batch_size,
            "schedule": config.teacher_schedule, "patience": config.teacher_patience,
            "max_seq_length": config.max_seq_length, "warmup_ratio": config.teacher_warmup_ratio,
            "weight_decay": config.weight_decay, "max_grad_norm": config.max_grad_norm, "seed": config.seed,
            "selection": config.selection,
            "selection_fraction": config.selection_fraction if config.selection == "split" else None}
