"""Threshold balancing of the spiking student: its thresholds theta from the network's own activations
v over the non-pad tokens of calibration batches, measured with nothing clipped (the ANN-equivalent
network); ``SpikingBertForSequenceClassification.calibrate_thresholds`` gives the equations.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from eqspike.core.neurons import NeuronConfig, time_step_rate
from eqspike.errors import check_in_interval

_UNCALIBRATED = 1e4  # thresholds so large that nothing is clipped (used during calibration)


def calibrate(
    student: Any, batches: Iterable[Mapping[str, Tensor]], quantile: float, floor: float, time_steps: int | None
) -> None:
    """Set the thresholds of every population of the spiking ``student``: theta = the ``quantile`` of |v|
    per neuron, or with ``time_steps`` T the best T-step quantizer's threshold below it; at least ``floor``."""
    check_in_interval("quantile", quantile, 0.0, 1.0)
    names = student.population_names(student.config.num_hidden_layers)
    for name in names:
        student.threshold(name).fill_(_UNCALIBRATED)
    collected = _unclipped_values(student, batches, names)
    for name in names:
        values = torch.cat(collected[name])
        theta = _column_quantile(values.abs(), quantile).clamp_min(floor)
        if time_steps is not None:
            theta = _best_quantizer_thresholds(values, theta, student.neuron_of(name), time_steps).clamp_min(floor)
        student.threshold(name).copy_(theta)


def _unclipped_values(student: Any, batches: Iterable[Mapping[str, Tensor]], names: list[str]) -> dict[str, list[Tensor]]:
    """Per population and batch, the values v = theta a at the exact equilibrium of the non-pad tokens,
    (tokens, neurons), with the thresholds at _UNCALIBRATED so that nothing is clipped."""
    collected: dict[str, list[Tensor]] = {name: [] for name in names}
    for batch in batches:
        mask = batch["attention_mask"].bool()
        rate_map = student.rate_map(
            batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids", torch.zeros_like(batch["input_ids"]))
        )
        rates = student.equilibrium(rate_map, mode="solve").rates
        for name in names:
            collected[name].append((_UNCALIBRATED * rates[name])[mask])
    if not collected[names[0]]:
        raise ValueError("calibrate_thresholds needs at least one batch")
    return collected


def _best_quantizer_thresholds(
    values: Tensor, largest: Tensor, neuron: NeuronConfig, time_steps: int, candidates: int = 16
) -> Tensor:
    """Per column of ``values`` (N, C), the threshold c among largest * 2^(-k/4), k < candidates, with
    the least squared error sum_n (c Q_T(v_n / c) - v_n)^2 of the T-step quantizer."""
    best, best_error = largest.clone(), torch.full_like(largest, float("inf"))
    for k in range(candidates):
        c = largest * 2.0 ** (-k / 4)
        error = (c * time_step_rate(values / c, neuron, time_steps) - values).pow(2).sum(0)
        better = error < best_error
        best, best_error = torch.where(better, c, best), torch.where(better, error, best_error)
    return best


def _column_quantile(values: Tensor, quantile: float) -> Tensor:
    """Per-column quantile of a (N, C) tensor (sorting; torch.quantile caps the input size)."""
    if values.shape[0] == 0:
        return torch.zeros(values.shape[1], dtype=values.dtype, device=values.device)
    ordered = values.sort(dim=0).values
    index = min(values.shape[0] - 1, max(0, math.ceil(quantile * values.shape[0]) - 1))
    return ordered[index]
