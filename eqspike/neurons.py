"""Integrate-and-fire neuron populations with reset by subtraction (DESIGN.md §2).

Per time step t = 1..T, for a population with input current I(t):

    u(t) = gamma * u(t-1) + I(t)
    s(t) = +1 if u(t) >= V_th;  -1 if signed and u(t) <= -V_th;  else 0
    u(t) <- u(t) - V_th * s(t)

The average spike rate (ASR) is leak-weighted so that IF neurons (gamma = 1) get the plain mean:

    a(T) = R(T) / Z(T),   R(t) = gamma R(t-1) + s(t),   Z(t) = gamma Z(t-1) + 1   (Z(T) = T for IF)

Because |u| < V_th after every reset while the neuron is not saturated, a constant current gives

    |a(T) - clamp(I / V_th, lo, 1)| < 1 / Z(T)       (lo = -1 signed, 0 unsigned)

which is 1/T for IF. With a leak the bound stops at (1 - gamma): only IF has the clamp as its exact
equilibrium, which is why IF is the default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from eqspike.validation import check_in_interval, check_int_at_least, check_positive


@dataclass(frozen=True)
class NeuronConfig:
    """Parameters shared by the neurons of a population.

    threshold: V_th > 0.  leak: gamma in (0, 1]; 1 is integrate-and-fire (IF).
    signed: ternary spikes {-1, 0, +1} when True, binary {0, 1} otherwise.
    """

    threshold: float = 1.0
    leak: float = 1.0
    signed: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "threshold", check_positive("threshold", self.threshold))
        object.__setattr__(self, "leak", check_in_interval("leak", self.leak, 0.0, 1.0))
        if not isinstance(self.signed, bool):
            raise ValueError(f"signed={self.signed!r} is not valid; it must be True or False")

    @property
    def lowest_rate(self) -> float:
        """lo: -1 for signed neurons, 0 for unsigned ones."""
        return -1.0 if self.signed else 0.0


def equilibrium_rate(current: Tensor, neuron: NeuronConfig) -> Tensor:
    """Closed-form IF equilibrium rate: a* = clamp(I / V_th, lo, 1)."""
    return (current / neuron.threshold).clamp(neuron.lowest_rate, 1.0)


def _heaviside_spikes(u: Tensor, threshold: float, signed: bool) -> Tensor:
    spikes = (u >= threshold).to(u.dtype)
    if signed:
        spikes = spikes - (u <= -threshold).to(u.dtype)
    return spikes


class _StraightThroughSpike(torch.autograd.Function):
    """Heaviside spikes forward; a rectangular straight-through gradient backward:
    ds/du = 1/V_th for |u| < 2 V_th (signed) or 0 < u < 2 V_th (unsigned), 0 elsewhere."""

    @staticmethod
    def forward(ctx, u: Tensor, threshold: float, signed: bool) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(u)
        ctx.threshold, ctx.signed = threshold, signed
        return _heaviside_spikes(u, threshold, signed)

    @staticmethod
    def backward(ctx, grad_spikes: Tensor):  # type: ignore[override]
        (u,) = ctx.saved_tensors
        lower = -2.0 * ctx.threshold if ctx.signed else 0.0
        window = (u > lower) & (u < 2.0 * ctx.threshold)
        return grad_spikes * window.to(grad_spikes.dtype) / ctx.threshold, None, None


def fire(u: Tensor, neuron: NeuronConfig, surrogate: bool = False) -> Tensor:
    """Spikes s = H(u - V_th) - [signed] H(-u - V_th). With ``surrogate=True`` the spike is
    differentiable through a straight-through window (used only by backprop-through-time)."""
    if surrogate:
        return _StraightThroughSpike.apply(u, neuron.threshold, neuron.signed)
    return _heaviside_spikes(u, neuron.threshold, neuron.signed)


class IFPopulation:
    """The state of one population during a simulation.

    Holds the leak-weighted spike count R, its normaliser Z, the number of spikes fired (|s| summed
    over time, per neuron, for energy accounting; skipped with ``count_spikes=False``) and the
    membrane potential. A population is driven either by ``step`` (any input current) or by
    ``step_ideal`` (the ideal-current drive of a rate map), not both.
    With ``differentiable=True`` every update is out of place and spikes use the straight-through
    surrogate, so autograd can run backprop-through-time over the simulation.
    """

    def __init__(self, neuron: NeuronConfig, differentiable: bool = False, count_spikes: bool = True) -> None:
        self.neuron = neuron
        self.differentiable = differentiable
        self.count_spikes = count_spikes
        self.t = 0
        self.normaliser = 0.0  # Z(t)
        self.u: Tensor | None = None  # membrane after reset, for ``step``
        self._count: Tensor | None = None  # R(t); -R(t) for the eager ideal drive (one kernel less, ``_negated``)
        self.spike_count: Tensor | None = None  # sum_t |s(t)|, None with count_spikes=False
        self._ideal: Tensor | None = None  # F(t), for ``step_ideal``
        self._drive: str | None = None

    @property
    def _negated(self) -> bool:
        """Whether ``_count`` holds -R (the eager ideal drive) rather than R."""
        return self._drive == "ideal" and not self.differentiable

    @property
    def weighted_count(self) -> Tensor:
        """R(t) = gamma R(t-1) + s(t): the leak-weighted spike count."""
        if self._count is None:
            raise RuntimeError("the population has not been stepped yet")
        return -self._count if self._negated else self._count

    @property
    def rate(self) -> Tensor:
        """a(t) = R(t) / Z(t): the (leak-weighted) average spike rate so far."""
        if self._count is None:
            raise RuntimeError("the population has not been stepped yet")
        return self._count / (-self.normaliser if self._negated else self.normaliser)

    @property
    def membrane(self) -> Tensor:
        """u(t) after the reset; for the ideal drive it is Z(t) F(t) - V_th R(t) (see ``step_ideal``)."""
        if self._drive is None:
            raise RuntimeError("the population has not been stepped yet")
        if self._drive == "current":
            return self.u
        return self.normaliser * self._ideal - self.neuron.threshold * self.weighted_count

    def _start(self, like: Tensor, drive: str) -> None:
        if self._drive is None:
            self._drive = drive
            self._count = torch.zeros_like(like, dtype=torch.promote_types(like.dtype, torch.float32))
            self.spike_count = torch.zeros_like(self._count) if self.count_spikes else None
            if drive == "current":
                self.u = torch.zeros_like(like)
        elif self._drive != drive:
            raise RuntimeError("a population is driven by step() or by step_ideal(), not both")
        self.t += 1

    def _count_spikes(self, spikes: Tensor) -> None:
        if self.count_spikes:  # |s| = s * s for s in {-1, 0, 1}
            if self.differentiable:
                self.spike_count = self.spike_count + spikes.detach().abs()
            else:
                self.spike_count.addcmul_(spikes, spikes)

    def step(self, current: Tensor) -> Tensor:
        """Integrate one step of input current I(t); return the spikes s(t)."""
        gamma, v_th = self.neuron.leak, self.neuron.threshold
        self._start(current, "current")
        self.normaliser = gamma * self.normaliser + 1.0
        if self.differentiable:
            u = gamma * self.u + current
            spikes = fire(u, self.neuron, surrogate=True)
            self.u = u - v_th * spikes
            self._count = gamma * self._count + spikes
        else:
            spikes = fire(self.u.mul_(gamma).add_(current), self.neuron)
            self.u.sub_(spikes, alpha=v_th)
            self._count.mul_(gamma).add_(spikes)
        self._count_spikes(spikes)
        return spikes

    def step_ideal(self, ideal_current: Tensor) -> Tensor:
        """Drive the population towards clamp(F(t) / V_th) where F(t) is the ideal current computed
        from the upstream running rates (DESIGN.md §2): integrate the increment of the cumulative
        ideal current, I(t) = Z(t) F(t) - gamma Z(t-1) F(t-1). For an affine F(a) = W a + b this
        current is exactly the synaptic current W s(t) + b.

        By induction the membrane then holds exactly Z(t) F(t) - V_th R(t) after every reset, so
        |a(t) - clamp(F(t) / V_th)| < 1 / Z(t) at every step, and the step needs no membrane state:

            u(t) / V_th = Z(t) F(t) / V_th - gamma R(t-1)     (before the reset)
            s(t) = clamp(trunc(u(t) / V_th), lo, 1)           (= the threshold test while |u| < 2 V_th)

        trunc+clamp equals the threshold test for every u: |u| >= V_th gives |trunc(u / V_th)| >= 1.
        Four elementwise operations per step (five with spike counting), and one more to read the rate.
        """
        gamma, v_th = self.neuron.leak, self.neuron.threshold
        self._start(ideal_current, "ideal")
        self.normaliser = gamma * self.normaliser + 1.0
        self._ideal = ideal_current
        if self.differentiable:
            u = self.normaliser * ideal_current - (gamma * v_th) * self._count
            spikes = fire(u, self.neuron, surrogate=True)
            self._count = gamma * self._count + spikes
        else:  # the state is -R, so that u / V_th = Z F / V_th + (-gamma R) is one kernel
            if gamma != 1.0:
                self._count.mul_(gamma)
            spikes = torch.add(self._count, ideal_current, alpha=self.normaliser / v_th)
            spikes.trunc_().clamp_(self.neuron.lowest_rate, 1.0)
            self._count.sub_(spikes)
        self._count_spikes(spikes)
        return spikes


@dataclass
class NeuronSimulation:
    """Result of simulating one population: final rates and, on request, a(t) for t = 1..T."""

    rates: Tensor
    trajectory: Tensor | None  # shape (T, *rates.shape)
    spike_count: Tensor  # sum_t |s(t)| per neuron


def simulate_constant_current(
    current: Tensor,
    time_steps: int,
    neuron: NeuronConfig = NeuronConfig(),
    record_trajectory: bool = False,
) -> NeuronSimulation:
    """Run one population for ``time_steps`` steps with a constant input current I."""
    check_int_at_least("time_steps", time_steps, 1)
    population = IFPopulation(neuron)
    trajectory = []
    with torch.no_grad():
        for _ in range(time_steps):
            population.step(current)
            if record_trajectory:
                trajectory.append(population.rate.clone())
    return NeuronSimulation(
        rates=population.rate,
        trajectory=torch.stack(trajectory) if record_trajectory else None,
        spike_count=population.spike_count,
    )
