"""Small pieces shared by the training loops: device, seeds, optimiser, schedule, atomic writes."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn

from eqspike.validation import EqspikeError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EqspikeError("device='cuda' was asked for but no CUDA device is available; use --device cpu")
    return torch.device(name)


PRECISIONS = ("fp32", "bf16")


def autocast(precision: str, device: torch.device):
    """The training-step context: bf16 autocast (CUDA, or CPU where supported) or nothing for fp32."""
    if precision == "fp32":
        return nullcontext()
    if precision != "bf16":
        raise EqspikeError(f"precision={precision!r} is not valid; choose one of: {', '.join(map(repr, PRECISIONS))}")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise EqspikeError(f"precision='bf16' needs a GPU with bfloat16 support; {torch.cuda.get_device_name(device)} "
                         f"has none: use --precision fp32")
    return torch.autocast(device.type, dtype=torch.bfloat16)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(named_parameters: Iterable[tuple[str, nn.Parameter]], lr: float, weight_decay: float,
                   threshold_lr: float | None = None) -> torch.optim.AdamW:
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


def linear_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_ratio`` of the steps, then linear decay to 0."""
    warmup = int(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@contextmanager
def atomic_directory(target: str | Path):
    """Yield a temporary directory beside ``target``; on success it replaces ``target`` in one rename,
    so a crash never leaves a half-written checkpoint where a good one was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
        os.replace(staging, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def progress(iterable=None, total: int | None = None, desc: str = "", disable: bool | None = None):
    """A tqdm bar (off when stderr is not a terminal and EQSPIKE_PROGRESS is not set)."""
    from tqdm.auto import tqdm

    if disable is None:
        import sys

        disable = not (sys.stderr.isatty() or os.environ.get("EQSPIKE_PROGRESS"))
    return tqdm(iterable, total=total, desc=desc, disable=disable, dynamic_ncols=True, leave=False)
