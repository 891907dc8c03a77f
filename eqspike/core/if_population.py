"""The state of an integrate-and-fire population during a simulation, driven by any input current or
by the ideal current of a rate map, with leak-weighted rates, spike counts and hysteresis (the neuron
model and its equations: ``eqspike.core.neurons``); and one population run under a constant current.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from eqspike.core.neurons import NeuronConfig, fire
from eqspike.errors import check_int_at_least


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
        self._last: Tensor | None = None  # sign of the last spike, with hysteresis

    @property
    def _negated(self) -> bool:
        """Whether ``_count`` holds c - R (the eager ideal drive; c = the neuron's offset) rather than R."""
        return self._drive == "ideal" and not self.differentiable

    @property
    def weighted_count(self) -> Tensor:
        """R(t) = gamma R(t-1) + s(t): the leak-weighted spike count."""
        if self._count is None:
            raise RuntimeError("the population has not been stepped yet")
        return torch.rsub(self._count, self.neuron.offset) if self._negated else self._count

    @property
    def rate(self) -> Tensor:
        """a(t) = R(t) / (B Z(t)): the (leak-weighted) average spike rate so far (B = 1 but for bursts)."""
        if self._count is None:
            raise RuntimeError("the population has not been stepped yet")
        scale = self.normaliser * self.neuron.levels  # B Z(t)
        if not self._negated:
            return self._count / scale
        if self.neuron.offset:
            return torch.rsub(self._count, self.neuron.offset).div_(scale)
        return self._count / -scale

    @property
    def membrane(self) -> Tensor:
        """u(t) after the reset; for the ideal drive it is Z(t) F(t) - (V_th / B) R(t) (see ``step_ideal``)."""
        if self._drive is None:
            raise RuntimeError("the population has not been stepped yet")
        if self._drive == "current":
            return self.u
        return self.normaliser * self._ideal - self.neuron.unit * self.weighted_count

    def _start(self, like: Tensor, drive: str) -> None:
        if self._drive is None:
            self._drive = drive
            self._count = torch.zeros_like(like, dtype=torch.promote_types(like.dtype, torch.float32))
            if self._negated:
                self._count += self.neuron.offset
            self.spike_count = torch.zeros_like(self._count) if self.count_spikes else None
            if drive == "current":
                self.u = torch.zeros_like(like)
            if self.differentiable and self.neuron.levels > 1:
                raise ValueError("burst spikes (levels > 1) are not differentiable (backprop-through-time needs levels=1)")
            if self.neuron.hysteresis:
                if self.differentiable:
                    raise ValueError("hysteresis is not differentiable (backprop-through-time needs hysteresis=0)")
                self._last = torch.zeros_like(self._count)
        elif self._drive != drive:
            raise RuntimeError("a population is driven by step() or by step_ideal(), not both")
        self.t += 1

    def _hysteresis_spikes(self, y: Tensor) -> Tensor:
        """Spikes from y = u / V_th + 1/2 with hysteresis h: +1 if y >= 1 + h [last spike -1],
        -1 if y < -h [last spike +1]. Writing y' = y + (h/2) last, both thresholds become symmetric
        in |last|: +1 iff y' >= 1 + (h/2)|last|, -1 iff y' < -(h/2)|last|."""
        half = 0.5 * self.neuron.hysteresis
        width = self._last.abs() * half  # w = (h/2) |last|
        shifted = (torch.add(y, self._last, alpha=half) + width) / (1.0 + 2.0 * width)  # (y' + w) / (1 + 2w)
        spikes = shifted.floor_().clamp_(-1.0, 1.0)  # +1 iff y' >= 1 + w, -1 iff y' < -w
        self._last = torch.where(spikes != 0, spikes, self._last)
        return spikes

    def _count_spikes(self, spikes: Tensor) -> None:
        if self.count_spikes:  # |s| = s * s for s in {-1, 0, 1}
            if self.neuron.levels > 1:
                self.spike_count.add_(spikes.abs())
            elif self.differentiable:
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
            self.u.mul_(gamma).add_(current)
            spikes = self._hysteresis_spikes(self.u / v_th + 0.5) if self._last is not None else fire(self.u, self.neuron)
            self.u.sub_(spikes, alpha=self.neuron.unit)
            self._count.mul_(gamma).add_(spikes)
        self._count_spikes(spikes)
        return spikes

    def step_ideal(self, ideal_current: Tensor) -> Tensor:
        """Drive the population towards clamp(F(t) / V_th) where F(t) is the ideal current computed
        from the upstream running rates (docs/design.md): integrate the increment of the cumulative
        ideal current, I(t) = Z(t) F(t) - gamma Z(t-1) F(t-1). For an affine F(a) = W a + b this
        current is exactly the synaptic current W s(t) + b.

        By induction the membrane then holds exactly Z(t) F(t) - V_th R(t) after every reset, so the
        step needs no membrane state:

            u(t) / V_th = Z(t) F(t) / V_th - gamma R(t-1)                 (before the reset)
            s(t) = clamp(floor(u(t) / V_th + 1/2), lo, 1)   (round)   or   clamp(trunc(u(t) / V_th), lo, 1)

        which equals the threshold test of ``fire`` for every u. While one spike a step can follow
        the drive (the neuron is not saturated and Z F moves by less than a threshold a step beyond
        F itself), R(t) = round(Z(t) F(t) / V_th), i.e. |a(t) - clamp(F(t) / V_th)| <= 1 / (2 Z(t)):
        the rates are those of the T-step quantizer applied to the latest current (``time_step_rate``).
        Eager state: c - R with c = 1/2 (round) or 0 (trunc), so that u / V_th + c is one kernel; a
        step is four elementwise operations (five with spike counting), plus one or two to read the rate.
        Burst neurons: the same with V_th / B for V_th and the clamp [lo B, B], so R(t) = round(B Z F / V_th).
        """
        gamma, v_th = self.neuron.leak, self.neuron.threshold
        self._start(ideal_current, "ideal")
        self.normaliser = gamma * self.normaliser + 1.0
        self._ideal = ideal_current
        if self.differentiable:
            u = self.normaliser * ideal_current - (gamma * v_th) * self._count
            spikes = fire(u, self.neuron, surrogate=True)
            self._count = gamma * self._count + spikes
        else:
            offset = self.neuron.offset
            if gamma != 1.0:  # c - gamma R = gamma (c - R) + (1 - gamma) c
                self._count.mul_(gamma)
                if offset:
                    self._count.add_((1.0 - gamma) * offset)
            levels = self.neuron.levels
            spikes = torch.add(self._count, ideal_current, alpha=self.normaliser * levels / v_th)
            if self._last is not None:
                spikes = self._hysteresis_spikes(spikes)
            else:
                (spikes.floor_() if offset else spikes.trunc_()).clamp_(self.neuron.lowest_rate * levels, float(levels))
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
