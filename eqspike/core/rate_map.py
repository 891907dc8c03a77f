"""Phi, the rate map of a spiking network: named populations in topological order, each with the
rate clamp(F(upstream rates) / V_th, lo, 1) (T = infinity) or the T-step quantizer of it
(docs/design.md §3).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from eqspike.core.neurons import NeuronConfig, equilibrium_rate, time_step_rate
from eqspike.errors import check_int_at_least


def _rate(current: Tensor, neuron: NeuronConfig, time_steps: int | None = None) -> Tensor:
    """The population's rate for a current: the exact equilibrium clamp(I / V_th, lo, 1) (T = infinity),
    or the T-step quantizer Q_T (``time_step_rate``). Rates stay in at least float32 when the current
    comes from autocast (bf16)."""
    current = current.to(torch.promote_types(current.dtype, torch.float32))
    return equilibrium_rate(current, neuron) if time_steps is None else time_step_rate(current, neuron, time_steps)


@dataclass(frozen=True)
class Population:
    """A population of spiking neurons with input current ``current(*rates of inputs)``.

    ``current`` must be deterministic and differentiable (no dropout that changes between calls).
    ``neuron`` overrides the rate map's default neuron parameters for this population.
    """

    name: str
    inputs: tuple[str, ...]
    current: Callable[..., Tensor]
    neuron: NeuronConfig | None = None


class RateMap:
    """Phi: the populations of a spiking network and their equilibrium rates, in topological order.

    initial_state: rates of the populations read through feedback edges before anything has fired
    (usually zeros); it fixes the shape of the equilibrium state and is required with feedback.
    time_steps: None for the exact rates clamp(F / V_th, lo, 1) (the T = infinity equilibrium), or T
    for the rates T steps of the spiking network give a constant current, Q_T(F) (``time_step_rate``;
    straight-through gradients): the map a student trained for deployment at T is trained on.
    """

    def __init__(
        self,
        populations: Sequence[Population],
        neuron: NeuronConfig = NeuronConfig(),
        initial_state: Mapping[str, Tensor] | None = None,
        time_steps: int | None = None,
    ) -> None:
        self.populations = tuple(populations)
        self.neuron = neuron
        self.time_steps = None if time_steps is None else check_int_at_least("time_steps", time_steps, 1)
        if not self.populations:
            raise ValueError("a rate map needs at least one population")
        position: dict[str, int] = {}
        for index, population in enumerate(self.populations):
            if not isinstance(population, Population):
                raise TypeError(f"populations[{index}] is a {type(population).__name__}, not a Population")
            if population.name in position:
                raise ValueError(f"population name {population.name!r} is used twice")
            position[population.name] = index
        sources = set()
        for index, population in enumerate(self.populations):
            for upstream in population.inputs:
                if upstream not in position:
                    raise ValueError(
                        f"population {population.name!r} reads {upstream!r}, which is not a population; "
                        f"known populations: {', '.join(position)}"
                    )
                if position[upstream] >= index:
                    sources.add(upstream)
        self.state_names: tuple[str, ...] = tuple(p.name for p in self.populations if p.name in sources)
        self.initial_state = dict(initial_state or {})
        missing = [name for name in self.state_names if name not in self.initial_state]
        if missing:
            raise ValueError(
                f"populations {missing} are read through feedback edges; give their rates before the "
                f"first step in initial_state (e.g. zeros of their shape)"
            )
        extra = [name for name in self.initial_state if name not in self.state_names]
        if extra:
            raise ValueError(f"initial_state names {extra}, which no feedback edge reads")
        batch_sizes = {self.initial_state[name].shape[0] for name in self.state_names}
        if len(batch_sizes) > 1:
            raise ValueError(f"the feedback state must share its first (batch) dimension; got sizes {batch_sizes}")

    @property
    def has_feedback(self) -> bool:
        return bool(self.state_names)

    def neuron_of(self, population: Population) -> NeuronConfig:
        return population.neuron or self.neuron

    def sweep(self, state: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """One Gauss-Seidel sweep: a_l = clamp(F_l(...) / V_th, lo, 1) (or Q_T) for every population in
        order; feedback inputs read ``state`` (the initial state when None)."""
        rates = self.sweep_until(self.populations[-1].name, state)
        self.check_state_shapes(rates)
        return rates

    def sweep_until(
        self, name: str, state: Mapping[str, Tensor] | None = None, anchor: Mapping[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        """The Gauss-Seidel sweep stopped after population ``name`` (what it needs, nothing after).
        ``anchor``: the values to carry instead of the map's (``anchored_sweep``)."""
        previous = self.initial_state if state is None else state
        rates: dict[str, Tensor] = {}
        for population in self.populations:
            upstream = [rates[n] if n in rates else previous[n] for n in population.inputs]
            current = population.current(*upstream)
            if anchor is None:
                rates[population.name] = _rate(current, self.neuron_of(population), self.time_steps)
            else:
                rates[population.name] = self.anchored_rate(population, current, anchor[population.name])
            if population.name == name:
                return rates
        raise ValueError(f"{name!r} is not a population of this rate map")

    def anchored_rate(self, population: Population, current: Tensor, value: Tensor) -> Tensor:
        """``value`` with the gradient of the population's rate map at ``current``:
        value + (Phi(current) - sg(Phi(current))) (sg: stop-gradient)."""
        mapped = _rate(current, self.neuron_of(population), self.time_steps)
        return value.detach().to(mapped.dtype) + (mapped - mapped.detach())

    def anchored_sweep(self, anchor: Mapping[str, Tensor], state: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """A sweep whose values are the given rates and whose gradient is the map's, taken there:

            a_l = anchor_l + (Phi_l(a_in) - sg(Phi_l(a_in))),   a_in the anchored rates of l's inputs

        (sg: stop-gradient). Every population's local Jacobian is evaluated at the anchored rates of its
        inputs, so for the rates of a T-step simulation this is the implicit gradient at the simulated
        state (feed-forward: J = 0 on the state; with feedback, ``state`` carries torchdeq's hook) and
        the forward value is exactly what the spiking network computed. With the T-step quantizer the
        thresholds get LSQ's gradient with the simulated count in place of Q_T: d(theta a)/d theta =
        a_sim - F / theta inside the range."""
        rates = self.sweep_until(self.populations[-1].name, state, anchor)
        self.check_state_shapes(rates)
        return rates

    def jacobi(self, rates: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Every population's equilibrium rate computed from the given rates of its inputs
        (Jacobi form; used to measure how far a set of rates is from being a fixed point)."""
        return {
            p.name: _rate(p.current(*[rates[name] for name in p.inputs]), self.neuron_of(p), self.time_steps)
            for p in self.populations
        }

    def residual(self, rates: Mapping[str, Tensor]) -> tuple[float, dict[str, float]]:
        """Relative equilibrium residual ||Phi_J(a) - a|| / ||a|| over all populations, and per population."""
        with torch.no_grad():
            mapped = self.jacobi(rates)
            per_population, diff_sq, norm_sq = {}, 0.0, 0.0
            for name, value in mapped.items():
                d = (value - rates[name]).pow(2).sum().item()
                n = rates[name].pow(2).sum().item()
                per_population[name] = (d / n) ** 0.5 if n > 0 else d**0.5
                diff_sq, norm_sq = diff_sq + d, norm_sq + n
        total = (diff_sq / norm_sq) ** 0.5 if norm_sq > 0 else diff_sq**0.5
        return total, per_population

    def check_state_shapes(self, rates: Mapping[str, Tensor]) -> None:
        """Phi must map the feedback state to a state of the same shape."""
        for name in self.state_names:
            expected, got = self.initial_state[name].shape, rates[name].shape
            if got != expected:
                raise ValueError(
                    f"the rate map changes the shape of population {name!r}: its state has shape "
                    f"{tuple(expected)} but the sweep returned {tuple(got)}"
                )
