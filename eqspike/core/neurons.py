"""Integrate-and-fire neuron populations with reset by subtraction (docs/design.md §1-2).

Per time step t = 1..T, for a population with input current I(t):

    u(t) = gamma * u(t-1) + I(t)
    s(t) = +1 if u(t) >= V_th / 2;  -1 if signed and u(t) < -V_th / 2;  else 0     (rounding="round")
    s(t) = +1 if u(t) >= V_th;      -1 if signed and u(t) <= -V_th;     else 0     (rounding="trunc")
    u(t) <- u(t) - V_th * s(t)

The average spike rate (ASR) is leak-weighted so that IF neurons (gamma = 1) get the plain mean:

    a(T) = R(T) / Z(T),   R(t) = gamma R(t-1) + s(t),   Z(t) = gamma Z(t-1) + 1   (Z(T) = T for IF)

The rounding neuron fires half a threshold earlier than the classic (truncating) one: it is the IF
neuron whose membrane starts at V_th / 2 (for unsigned neurons literally so). An IF neuron under a
constant current I then emits exactly

    R(T) = floor(T I / V_th + 1/2)   (round)     or     trunc(T I / V_th)   (trunc)

spikes, clamped to [lo T, T] (lo = -1 signed, 0 unsigned), so its rate is the T-step quantizer

    a(T) = Q_T(I / V_th) = clamp(floor(T I / V_th + 1/2) / T, lo, 1)      (``time_step_rate``)

and |a(T) - clamp(I / V_th, lo, 1)| <= 1 / (2T) for round, < 1 / T for trunc. A constant current
never makes a neuron reverse, so hysteresis (below) leaves these counts exactly as they are. At T = 4 a truncating
neuron needs a quarter of its threshold to fire at all and is silent below; the rounding one needs an
eighth. With a leak the bound stops at (1 - gamma): only IF has the clamp as its exact equilibrium,
which is why IF is the default.

Chatter and hysteresis. Under a current that moves (upstream rates still settling) a rounding
neuron whose membrane hovers near +-V_th / 2 fires +1 and later -1: spikes that cancel in the count
but cost energy. With hysteresis h a reversal needs the membrane past -(1/2 + h) V_th (resp. +), so
while one spike a step can follow the drive, |u| <= (1/2 + h) V_th after every step and

    |a(t) - clamp(I(t) / V_th, lo, 1)| <= (1/2 + h) / t      (h = 1/2: the truncating neuron's 1/t)

with the count still exactly round(t I / V_th) for a constant current. docs/design.md gives the
measurements: it saves spikes at large T and costs accuracy at T <= 8, where one count is a lot.

Multi-level (burst) spikes. A neuron with ``levels`` B > 1 may fire up to B spikes in one step, each
of amplitude V_th / B: it is the IF neuron of threshold V_th / B whose spikes per step are clamped to
[lo B, B], so that a(T) = R(T) / (B Z(T)) and under a constant current

    a(T) = Q_{BT}(I / V_th) = clamp(floor(B T I / V_th + 1/2) / (B T), lo, 1)

the resolution of B T steps in T steps' time. Every spike is counted (sum_t |s(t)|, up to B a
step), so the energy count charges the finer code. Burst neurons have no hysteresis.

A population's state during a simulation (membranes, counts, rates) is ``eqspike.core.if_population``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from eqspike.core.straight_through import straight_through
from eqspike.errors import (
    check_choice,
    check_in_interval,
    check_int_at_least,
    check_positive,
)


@dataclass(frozen=True)
class NeuronConfig:
    """Parameters shared by the neurons of a population.

    threshold: V_th > 0.  leak: gamma in (0, 1]; 1 is integrate-and-fire (IF).
    signed: ternary spikes {-1, 0, +1} when True, binary {0, 1} otherwise.
    rounding: 'round' (fire at +-V_th / 2: the spike count rounds the integrated current) or
        'trunc' (fire at +-V_th: the count truncates it; the classic IF neuron).
    hysteresis: h in [0, 1/2] (round only): a neuron whose last spike was +1 fires -1 only below
        -(1/2 + h) V_th, and vice versa, so that a membrane jittering around +-V_th / 2 does not
        fire +1, -1, +1, ... (chatter); the first spike and spikes of the same sign are unchanged.
    levels: B >= 1, the most spikes a step (burst spikes of amplitude V_th / B; the module docstring).
    """

    threshold: float = 1.0
    leak: float = 1.0
    signed: bool = True
    rounding: str = "round"
    hysteresis: float = 0.0
    levels: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "threshold", check_positive("threshold", self.threshold))
        object.__setattr__(self, "leak", check_in_interval("leak", self.leak, 0.0, 1.0))
        if not isinstance(self.signed, bool):
            raise ValueError(f"signed={self.signed!r} is not valid; it must be True or False")
        check_choice("rounding", self.rounding, ROUNDINGS)
        if isinstance(self.hysteresis, bool) or not isinstance(self.hysteresis, (int, float)) or not 0 <= self.hysteresis <= 0.5:
            raise ValueError(f"hysteresis={self.hysteresis!r} is not valid; it must lie in [0, 0.5] (thresholds)")
        if self.hysteresis and (self.rounding != "round" or not self.signed):
            raise ValueError("hysteresis needs signed rounding neurons (signed=True, rounding='round')")
        object.__setattr__(self, "hysteresis", float(self.hysteresis))
        check_int_at_least("levels", self.levels, 1)
        if self.levels > 1 and self.hysteresis:
            raise ValueError(f"levels={self.levels} (burst spikes) needs hysteresis=0; got hysteresis={self.hysteresis}")

    @property
    def unit(self) -> float:
        """The amplitude of one spike, V_th / B."""
        return self.threshold / self.levels

    @property
    def lowest_rate(self) -> float:
        """lo: -1 for signed neurons, 0 for unsigned ones."""
        return -1.0 if self.signed else 0.0

    @property
    def offset(self) -> float:
        """The membrane's head start in thresholds: 1/2 for the rounding neuron, 0 for truncation."""
        return 0.5 if self.rounding == "round" else 0.0


ROUNDINGS = ("round", "trunc")


def equilibrium_rate(current: Tensor, neuron: NeuronConfig) -> Tensor:
    """Closed-form IF equilibrium rate (T = infinity): a* = clamp(I / V_th, lo, 1)."""
    return (current / neuron.threshold).clamp(neuron.lowest_rate, 1.0)


def spike_count_of(scaled: Tensor, neuron: NeuronConfig) -> Tensor:
    """The neuron's integer reading of an integrated current in thresholds, x = T I / V_th:
    floor(x + 1/2) for round, trunc(x) for trunc (before the clamp to [lo T, T])."""
    return (scaled + 0.5).floor() if neuron.rounding == "round" else scaled.trunc()


def time_step_rate(current: Tensor, neuron: NeuronConfig, time_steps: int) -> Tensor:
    """The rate an IF population reaches after T steps of a constant current (the T-step quantizer):

        Q_T(I) = clamp(floor(T I / V_th + 1/2) / T, lo, 1)     (round; trunc(T I / V_th) for trunc)

    (with burst spikes of B levels, Q_{BT}: T is read as B T throughout)
    computed as round(T clamp(I / V_th, lo, 1)) / T (the same values). Differentiable with a
    straight-through gradient inside the range: dQ_T/dI = 1/V_th where lo <= I / V_th <= 1, else 0
    (QCFS, Bu et al. 2022). With a learnable threshold theta and the decoded value
    v = theta Q_T(F / theta), autograd then gives LSQ's step-size gradient (Esser et al. 2020):
    dv/dtheta = Q_T - F / theta inside the range, and lo or 1 where it is clipped.
    """
    check_int_at_least("time_steps", time_steps, 1)
    if neuron.leak != 1.0:
        raise ValueError(f"the T-step quantizer is the IF neuron's (leak=1.0); this neuron has leak={neuron.leak}")
    clipped = (current / neuron.threshold).clamp(neuron.lowest_rate, 1.0)
    counts = time_steps * neuron.levels
    return straight_through(partial(spike_count_of, neuron=neuron), clipped * counts) / counts


def _heaviside_spikes(u: Tensor, neuron: NeuronConfig) -> Tensor:
    if neuron.rounding == "round":
        spikes = (u >= 0.5 * neuron.threshold).to(u.dtype)
        return spikes - (u < -0.5 * neuron.threshold).to(u.dtype) if neuron.signed else spikes
    spikes = (u >= neuron.threshold).to(u.dtype)
    return spikes - (u <= -neuron.threshold).to(u.dtype) if neuron.signed else spikes


class _StraightThroughSpike(torch.autograd.Function):
    """Heaviside spikes forward; a rectangular straight-through gradient backward:
    ds/du = 1/V_th for |u| < 2 V_th (signed) or 0 < u < 2 V_th (unsigned), 0 elsewhere."""

    @staticmethod
    def forward(ctx, u: Tensor, neuron: NeuronConfig) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(u)
        ctx.neuron = neuron
        return _heaviside_spikes(u, neuron)

    @staticmethod
    def backward(ctx, grad_spikes: Tensor):  # type: ignore[override]
        (u,) = ctx.saved_tensors
        threshold = ctx.neuron.threshold
        lower = -2.0 * threshold if ctx.neuron.signed else 0.0
        window = (u > lower) & (u < 2.0 * threshold)
        return grad_spikes * window.to(grad_spikes.dtype) / threshold, None


def _burst_spikes(u: Tensor, neuron: NeuronConfig) -> Tensor:
    """s = clamp(floor(u / (V_th / B) + 1/2), lo B, B) (round; trunc(u / (V_th / B)) for trunc)."""
    spikes = spike_count_of(u / neuron.unit, neuron)
    return spikes.clamp_(neuron.lowest_rate * neuron.levels, float(neuron.levels))


def fire(u: Tensor, neuron: NeuronConfig, surrogate: bool = False) -> Tensor:
    """Spikes s = H(u - c V_th) - [signed] H(-u - c V_th), c = 1/2 (round) or 1 (trunc; the
    threshold itself counts as crossed upwards). With ``surrogate=True`` the spike is differentiable
    through a straight-through window (used only by backprop-through-time). Burst neurons (B levels)
    fire clamp(floor(u / (V_th / B) + 1/2), lo B, B) spikes (trunc: truncated), the same for B = 1."""
    if neuron.levels > 1:
        if surrogate:
            raise ValueError("burst spikes (levels > 1) have no surrogate gradient (backprop-through-time needs levels=1)")
        return _burst_spikes(u, neuron)
    if surrogate:
        return _StraightThroughSpike.apply(u, neuron)
    return _heaviside_spikes(u, neuron)
