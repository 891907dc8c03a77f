"""The straight-through estimator: a function in the forward, the identity in the backward (used by
the T-step quantizer of the neurons and by the 1/1.58-bit weights)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:  # type: ignore[override]
        return fn(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return grad, None


def straight_through(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Exactly fn(x) in the forward (not x + (fn(x) - x).detach(), which is off by rounding), and the
    gradient passed through to x unchanged."""
    return _StraightThrough.apply(x, fn)
