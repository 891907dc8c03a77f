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
