"""A small stacked spiking network, and the implicit-gradient check used by the tests and benchmarks.

The stack mirrors the kinds of populations in a spiking BERT block: an input population driven by a
constant current, then populations fed by an affine map, a LayerNorm and a GELU in turn, with an
optional feedback edge from the last population back into the first (so that the equilibrium is a
true fixed point with a non-zero Jacobian).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from eqspike.core.equilibrium import EquilibriumConfig, EquilibriumLayer
from eqspike.core.if_population import simulate_constant_current
from eqspike.core.neurons import NeuronConfig, equilibrium_rate
from eqspike.core.rate_map import Population, RateMap
from eqspike.core.simulation import simulate

_OPERATIONS = ("affine", "layernorm", "gelu")


class StackedSpikingNetwork(nn.Module):
    """Populations p0..p{depth-1} of width ``width``:

    F_0 = x W_in^T (+ a_{depth-1} W_fb^T with feedback)
    F_i = op_i(a_{i-1} W_i^T + b_i),  op_i cycling through affine, 0.5*LayerNorm, GELU.
    """

    def __init__(
        self,
        width: int,
        depth: int = 4,
        feedback: bool = False,
        feedback_gain: float = 0.5,
        neuron: NeuronConfig = NeuronConfig(),
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.width, self.depth, self.feedback, self.neuron = width, depth, feedback, neuron
        if depth < 2:
            raise ValueError(f"depth={depth!r} is not valid; it must be an integer >= 2")

        def linear(bias: bool = True) -> nn.Linear:
            layer = nn.Linear(width, width, bias=bias, dtype=dtype)
            with torch.no_grad():
                layer.weight.copy_(torch.randn(width, width, generator=generator, dtype=dtype) * 1.5 / math.sqrt(width))
                if bias:
                    layer.bias.copy_(0.1 * torch.randn(width, generator=generator, dtype=dtype))
            return layer

        self.input = linear(bias=False)
        self.layers = nn.ModuleList(linear() for _ in range(depth - 1))
        self.norms = nn.ModuleList(
            nn.LayerNorm(width, dtype=dtype) if self.operation(i) == "layernorm" else nn.Identity() for i in range(1, depth)
        )
        self.feedback_weight = None
        if feedback:
            self.feedback_weight = linear(bias=False)
            with torch.no_grad():
                self.feedback_weight.weight.mul_(feedback_gain / 1.5)

    def operation(self, index: int) -> str:
        return _OPERATIONS[(index - 1) % len(_OPERATIONS)]

    def rate_map(self, x: Tensor, time_steps: int | None = None) -> RateMap:
        """The equilibrium map of the network for input ``x`` (shape (..., width)); with ``time_steps``
        the map of T-step rates (the T-step quantizer at every population)."""
        last = f"p{self.depth - 1}"
        if self.feedback:
            first = Population("p0", (last,), lambda a_last: self.input(x) + self.feedback_weight(a_last))
            initial_state = {last: torch.zeros_like(x)}
        else:
            first = Population("p0", (), lambda: self.input(x))
            initial_state = None
        populations = [first]
        for i in range(1, self.depth):
            populations.append(Population(f"p{i}", (f"p{i - 1}",), self._current(i)))
        return RateMap(populations, self.neuron, initial_state, time_steps)

    def _current(self, i: int):
        linear, norm, op = self.layers[i - 1], self.norms[i - 1], self.operation(i)
        if op == "affine":
            return lambda a: linear(a)
        if op == "layernorm":
            return lambda a: 0.5 * norm(linear(a))
        return lambda a: F.gelu(linear(a))


def readout_loss(rates: dict[str, Tensor], seed: int = 1) -> Tensor:
    """A fixed random linear functional of every population's rates: L = sum_l <c_l, a_l>."""
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    for name in sorted(rates):
        # drawn on the CPU (the same functional on every device), then moved to the rates' device
        weights = torch.randn(rates[name].shape, generator=generator, dtype=rates[name].dtype).to(rates[name].device)
        total = total + (weights * rates[name]).sum()
    return total


def unrolled_gradient(network: StackedSpikingNetwork, x: Tensor, iterations: int = 300) -> list[Tensor]:
    """Reference gradient of ``readout_loss`` w.r.t. (x, *parameters): autograd through ``iterations``
    unrolled sweeps of the rate map from the initial state (no implicit differentiation)."""
    x = x.detach().requires_grad_()
    rate_map = network.rate_map(x)
    state = None
    for _ in range(iterations if rate_map.has_feedback else 1):
        rates = rate_map.sweep(state)
        state = {name: rates[name] for name in rate_map.state_names}
    rates = rate_map.sweep(state)
    return list(torch.autograd.grad(readout_loss(rates), [x, *network.parameters()]))


def implicit_gradient(
    network: StackedSpikingNetwork, x: Tensor, config: EquilibriumConfig
) -> tuple[list[Tensor], EquilibriumLayer]:
    """Gradient of ``readout_loss`` w.r.t. (x, *parameters) through an ``EquilibriumLayer``."""
    x = x.detach().requires_grad_()
    layer = EquilibriumLayer(config)
    out = layer(network.rate_map(x))
    return list(torch.autograd.grad(readout_loss(out.rates), [x, *network.parameters()])), layer


def relative_error(gradients: list[Tensor], reference: list[Tensor]) -> float:
    """max over tensors of ||g - g_ref|| / ||g_ref||."""
    return max(((g - r).norm() / r.norm()).item() for g, r in zip(gradients, reference))


def implicit_gradient_check(
    width: int = 16,
    depth: int = 4,
    batch: int = 3,
    tokens: int = 5,
    solver: str = "anderson",
    backward: str = "ift",
    seed: int = 0,
) -> float:
    """Relative error of the implicit gradient (float64, tight tolerances, feedback on) against
    autograd through a long unrolled fixed-point iteration. Returns max over (x, parameters)."""
    network = StackedSpikingNetwork(width, depth, feedback=True, seed=seed, dtype=torch.float64)
    x = torch.randn(batch, tokens, width, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    config = EquilibriumConfig(
        forward="solve",
        solver=solver,
        max_iter=200,
        tol=1e-12,
        backward=backward,
        backward_max_iter=200,
        backward_tol=1e-12,
        phantom_steps=1,
    )
    gradients, _ = implicit_gradient(network, x, config)
    return relative_error(gradients, unrolled_gradient(network, x))


def selfcheck(seed: int = 0) -> list[tuple[str, str, bool]]:
    """This installation's core checked on this device, as (check, detail, passed): the IF rate bound
    |r_T - a*| <= 1/(2T) at T = 32, implicit gradients against an unrolled reference (each solver), and
    the convergence of spike rates to the equilibrium (the worst population's mean error at T = 64 below a
    quarter of T = 8's)."""
    generator = torch.Generator().manual_seed(seed)
    rows: list[tuple[str, str, bool]] = []

    current = torch.empty(10_000).uniform_(-2, 2, generator=generator)
    for signed in (True, False):
        neuron = NeuronConfig(signed=signed)
        error = (simulate_constant_current(current, 32, neuron).rates - equilibrium_rate(current, neuron)).abs().max().item()
        rows.append(
            (
                f"IF rate bound, {'signed' if signed else 'unsigned'}, T=32",
                f"max error {error:.4f} <= 1/64",
                error <= 1 / 64 + 1e-6,
            )
        )

    for solver in ("anderson", "broyden", "fixed_point_iter"):
        error = implicit_gradient_check(solver=solver, seed=seed)
        rows.append((f"implicit gradient, {solver}", f"relative error {error:.1e} < 1e-4", error < 1e-4))

    network = StackedSpikingNetwork(64, 4, feedback=True, feedback_gain=0.3, seed=seed)
    x = torch.randn(4, 16, 64, generator=generator)
    with torch.no_grad():
        rate_map = network.rate_map(x)
        star = EquilibriumLayer(EquilibriumConfig(tol=1e-6, max_iter=100))(rate_map).rates
        error = {T: max((r - star[k]).abs().mean().item() for k, r in simulate(rate_map, T).rates.items()) for T in (8, 64)}
    rows.append(
        (
            "spike rates -> equilibrium",
            f"worst population error T=8 {error[8]:.4f}, T=64 {error[64]:.4f}",
            error[64] < 0.25 * error[8],
        )
    )

    return rows
