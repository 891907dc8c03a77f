"""The recipe's stages as data (name, steps, learning rate, loss, energy budget), the student's forward
each stage trains, and the seeded order of the batches a stage's steps read (docs/design.md §6)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from eqspike.data.batches import batch_order, iterate_batches
from eqspike.distill.config import RunConfig
from eqspike.distill.losses import LossWeights, Share, gold_loss, intermediate_loss, prediction_loss
from eqspike.distill.prepare import Prepared


@dataclass
class StageOutput:
    hidden_values: list[Tensor] | None
    attention_scores: list[Tensor] | None
    logits: Tensor | None
    rates: dict[str, Tensor] | None


LossFn = Callable[[StageOutput, "dict[str, Any] | None", "dict[str, Tensor]", Share], "dict[str, Tensor]"]


@dataclass(frozen=True)
class Stage:
    """One stage of the recipe: its name, number of steps and learning rate, its loss (of the
    student's stage output, the teacher's targets, the batch and the global counts), and the energy
    budget it is held to (None: none)."""

    index: int
    name: str
    steps: int
    lr: float
    loss: LossFn
    energy_budget: float | None = None


class StageForward(torch.nn.Module):
    """The student's forward returning only what a stage's losses read (hidden values and attention
    scores, or logits; the rates too under an energy budget), so that DDP sees the head as unused in
    the intermediate stage."""

    def __init__(self, student: torch.nn.Module, stage: str, with_rates: bool = False) -> None:
        super().__init__()
        self.student, self.stage, self.with_rates = student, stage, with_rates

    def forward(self, **inputs: Tensor) -> StageOutput:
        if self.stage == "intermediate":
            out = self.student(**inputs, output_attention_scores=True)
            return StageOutput(
                self.student.in_teacher_space(out.hidden_values),
                out.attention_scores,
                None,
                out.rates if self.with_rates else None,
            )
        out = self.student(**inputs)
        return StageOutput(None, None, out.logits, out.rates if self.with_rates else None)


def recipe(c: RunConfig, data: Prepared) -> list[Stage]:
    """The recipe: layerwise distillation, then the teacher's predictions (docs/design.md §6). With
    SpikeLM's own recipe, the task loss alone in the second stage."""
    regression = data.task.is_regression
    per_epoch = steps_per_epoch(data, c.batch_size)
    weights = LossWeights(c.hidden_weight, c.attention_weight, c.gold_weight, c.temperature)
    intermediate = Stage(
        0,
        "intermediate",
        0 if c.task_loss_only else round(c.intermediate_epochs * per_epoch),
        c.intermediate_lr,
        lambda out, targets, batch, share: intermediate_loss(out, targets, batch["attention_mask"], weights, share),
    )
    if c.task_loss_only:

        def predict(out, targets, batch, share):
            gold = gold_loss(out.logits, batch["labels"], regression, share)
            return {"loss": gold, "gold": gold.detach()}
    else:

        def predict(out, targets, batch, share):
            return prediction_loss(out.logits, targets["logits"], batch["labels"], regression, weights, share)

    # The energy budget holds in the prediction stage; the intermediate stage aligns the student
    # with the teacher's layers, which a budget would fight (docs/design.md §5).
    prediction = Stage(1, "prediction", round(c.prediction_epochs * per_epoch), c.prediction_lr, predict, c.energy_budget)
    return [intermediate, prediction]


def steps_per_epoch(data: Prepared, batch_size: int) -> int:
    """Optimiser steps in one pass over the training data: ceil(examples / batch_size)."""
    return -(-len(data.train) // batch_size)


def global_batch(data: Prepared, c: RunConfig, stage: Stage, step: int) -> list[int]:
    """The indices of the global batch of one optimiser step (the same for any number of ranks): the
    step's place in the shuffled order of its epoch, seeded by the seed and 1000 x stage + epoch."""
    epoch, position = divmod(step, steps_per_epoch(data, c.batch_size))
    return batch_order(len(data.train), c.batch_size, c.seed, 1000 * stage.index + epoch)[position]


def calibration_batches(data: Prepared, c: RunConfig, device: torch.device) -> list[dict[str, Tensor]]:
    """The first ``calibration_examples`` of a shuffled pass (its own order: 'epoch' -1)."""
    batches, seen = [], 0
    for batch in iterate_batches(data.train, batch_order(len(data.train), c.batch_size, c.seed, -1)):
        batches.append({k: v.to(device) for k, v in batch.items()})
        seen += len(batch["input_ids"])
        if seen >= c.calibration_examples:
            break
    return batches
