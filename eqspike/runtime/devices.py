"""Devices, bf16 autocast and seeds."""

from __future__ import annotations

import random
from contextlib import nullcontext

import numpy as np
import torch

from eqspike.errors import EqspikeError


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
        raise EqspikeError(
            f"precision='bf16' needs a GPU with bfloat16 support; {torch.cuda.get_device_name(device)} "
            f"has none: use --precision fp32"
        )
    return torch.autocast(device.type, dtype=torch.bfloat16)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
