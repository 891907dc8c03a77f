"""1-bit and 1.58-bit weights with a straight-through estimator (docs/design.md §4; BitNet-style).

    1-bit:    W_q = alpha * sign(W - mu),                   mu = mean(W), alpha = mean|W - mu|
    1.58-bit: W_q = gamma * clip(round(W / gamma), -1, 1),  gamma = mean|W|

Both are per tensor. The full-precision weights are kept as the trained ("shadow") parameters; the
forward uses W_q, and the backward passes the gradient straight through (dL/dW := dL/dW_q).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from eqspike.core.straight_through import straight_through
from eqspike.errors import check_choice

WEIGHT_BITS = (32, 1, 1.58)


_EPS = 1e-8


def parse_weight_bits(value: object) -> float | int:
    """Accept 32, 1, 1.58 (also as strings, e.g. from the command line)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = None
    for choice in WEIGHT_BITS:
        if number is not None and abs(number - choice) < 1e-9:
            return choice
    return check_choice("weight_bits", value, WEIGHT_BITS)


def quantize_weight(weight: Tensor, bits: float) -> Tensor:
    """The quantized weight W_q (no gradient trick; see ``straight_through``)."""
    bits = parse_weight_bits(bits)
    if bits == 32:
        return weight
    if bits == 1:
        centred = weight - weight.mean()
        alpha = centred.abs().mean()
        # sign(0) would give a fourth value (0); send exact zeros to +1.
        return alpha * torch.where(centred >= 0, 1.0, -1.0).to(weight.dtype)
    gamma = weight.abs().mean().clamp_min(_EPS)
    return gamma * (weight / gamma).round().clamp(-1, 1)


def straight_through_weight(weight: Tensor, bits: float) -> Tensor:
    """Exactly W_q in the forward, identity gradient to W."""
    if parse_weight_bits(bits) == 32:
        return weight
    return straight_through(partial(quantize_weight, bits=bits), weight)


class QuantLinear(nn.Linear):
    """``nn.Linear`` whose forward uses ``weight_bits``-bit weights (32 = full precision)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, weight_bits: float = 32, **kwargs) -> None:
        super().__init__(in_features, out_features, bias=bias, **kwargs)
        self.weight_bits = parse_weight_bits(weight_bits)

    def effective_weight(self) -> Tensor:
        return straight_through_weight(self.weight, self.weight_bits)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.effective_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_bits={self.weight_bits}"


def _fake_int8(x: Tensor, dim: int | None = None) -> Tensor:
    """Symmetric 8-bit rounding: scale = max|x| / 127 (per tensor, or per slice along ``dim``)."""
    peak = x.abs().amax() if dim is None else x.abs().amax(dim, keepdim=True)
    scale = peak.clamp_min(_EPS) / 127
    return (x / scale).round().clamp(-127, 127) * scale


@contextmanager
def simulate_int8(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` as a W8A8 network while inside: every ``nn.Linear`` uses its weight rounded to 8-bit
    integers per output channel and its input rounded to 8-bit integers per tensor (dynamic, as
    PyTorch's dynamic quantization does); the products of two activations (attention scores, P V) stay
    as they are. The weights are restored on exit."""
    saved, hooks = [], []
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                saved.append((module, module.weight.detach().clone()))
                module.weight.copy_(_fake_int8(module.weight, dim=1))
                hooks.append(module.register_forward_pre_hook(lambda _, args: (_fake_int8(args[0]), *args[1:])))
    try:
        yield model
    finally:
        with torch.no_grad():
            for module, weight in saved:
                module.weight.copy_(weight)
        for hook in hooks:
            hook.remove()
