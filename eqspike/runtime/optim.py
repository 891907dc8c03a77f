"""The optimiser and learning-rate schedule shared by teacher fine-tuning and distillation."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def make_optimizer(
    named_parameters: Iterable[tuple[str, nn.Parameter]], lr: float, weight_decay: float, threshold_lr: float | None = None
) -> torch.optim.AdamW:
    """AdamW with no weight decay on biases and LayerNorm weights; thresholds (parameters named
    ``threshold*``, when trainable) in a group of their own with ``threshold_lr`` and no decay: a
    threshold is a step size of order 1, not a weight of order 0.05, so it needs a larger rate."""
    decay, no_decay, thresholds = [], [], []
    for name, parameter in named_parameters:
        if not parameter.requires_grad:
            continue
        if name.rsplit(".", 1)[-1].startswith("threshold"):
            thresholds.append(parameter)
        elif parameter.ndim < 2 or "norm" in name.lower():
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if thresholds:
        groups.append({"params": thresholds, "weight_decay": 0.0, "lr": threshold_lr or lr})
    return torch.optim.AdamW(groups, lr=lr)


def weight_average(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of ``model``'s parameters (torch's ``AveragedModel``): after each
    ``update_parameters(model)``, theta_avg <- decay theta_avg + (1 - decay) theta, the first update copying
    theta; buffers are copied as they are. ``.module`` is the averaged model, ``state_dict`` checkpoints it."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)


SCHEDULES = ("linear", "constant")


def linear_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float, kind: str = "linear"
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_ratio`` of the steps, then linear decay to 0 (``linear``) or the
    full rate to the end (``constant``)."""
    warmup = int(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
