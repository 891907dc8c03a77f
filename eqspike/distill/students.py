"""The student a run's settings ask for: each kind's config fields taken from ``RunConfig``, and its
start (every k-th teacher layer, a seeded random draw, or a saved student's weights)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from eqspike.core.equilibrium import EquilibriumConfig
from eqspike.distill.config import RunConfig
from eqspike.students import (
    DenseBertForSequenceClassification,
    SpikeLMForSequenceClassification,
    SpikingBertForSequenceClassification,
    warm_start,
)


def _eqspike(teacher_model: nn.Module, c: RunConfig) -> nn.Module:
    return SpikingBertForSequenceClassification.from_teacher(
        teacher_model,
        c.student_layers,
        c.student_widths,
        time_steps=c.time_steps,
        signed=c.signed,
        rounding=c.rounding,
        hysteresis=c.hysteresis,
        quantize_rates=c.train_for == "time_steps",
        feedback=c.feedback,
        weight_bits=c.weight_bits,
        threshold_quantile=c.threshold_quantile,
        threshold_init=c.threshold_init,
        teacher=c.teacher,
        spike_levels=c.spike_levels,
        equilibrium=EquilibriumConfig(forward=c.training_forward, solver=c.solver, track_residual=False),
    )


def _spikelm(teacher_model: nn.Module, c: RunConfig) -> nn.Module:
    torch.manual_seed(c.seed)
    return SpikeLMForSequenceClassification.from_teacher(
        teacher_model,
        c.student_layers,
        c.student_widths,
        time_steps=c.spikelm_time_steps,
        reset=c.spikelm_reset,
        teacher=c.teacher,
    )


def _dense(teacher_model: nn.Module, c: RunConfig) -> nn.Module:
    torch.manual_seed(c.seed)
    return DenseBertForSequenceClassification.from_teacher(teacher_model, c.student_layers, c.student_widths, teacher=c.teacher)


# kind -> the student of that kind from the teacher's every k-th layer, with the run's settings
BUILDERS: dict[str, Callable[[nn.Module, RunConfig], nn.Module]] = {
    SpikingBertForSequenceClassification.kind: _eqspike,
    SpikeLMForSequenceClassification.kind: _spikelm,
    DenseBertForSequenceClassification.kind: _dense,
}


def build_student(teacher_model: nn.Module, config: RunConfig) -> nn.Module:
    """The student ``config`` asks for: ``student_type``'s, from every k-th teacher layer; with
    ``student_init`` 'random', re-initialised at random (seeded); with a saved student's folder
    (``config.warm_start``), its weights but the thresholds (``warm_start``)."""
    student = BUILDERS[config.student_type](teacher_model, config)
    if config.student_init == "random":
        torch.manual_seed(config.seed)
        student = type(student)(student.config)
    elif config.warm_start is not None:
        warm_start(student, config.warm_start)
    return student
