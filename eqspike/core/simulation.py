"""The spiking network of a rate map, run for T steps: every population driven by the increment of its
cumulative ideal current (docs/design.md §2); without an autograd graph, or with one for
backprop-through-time (the baseline eqspike avoids).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from eqspike.core.neurons import IFPopulation
from eqspike.core.rate_map import RateMap
from eqspike.errors import check_int_at_least


@dataclass
class SimulationResult:
    """Average spike rates after T steps; per-step rates a(t) (shape (T, ...)) on request; the
    number of spikes each neuron fired, sum_t |s(t)|."""

    rates: dict[str, Tensor]
    trajectory: dict[str, Tensor] | None
    spike_counts: dict[str, Tensor]
    time_steps: int


Observer = Callable[[int, Mapping[str, Tensor], Mapping[str, Tensor]], None]


def simulate(
    rate_map: RateMap,
    time_steps: int,
    record_trajectory: bool = False,
    differentiable: bool = False,
    observer: Observer | None = None,
    count_spikes: bool = True,
) -> SimulationResult:
    """Run the spiking network of ``rate_map`` for ``time_steps`` steps.

    At step t each population, in order, receives the increment of its cumulative ideal current
    computed from its upstream running rates (``IFPopulation.step_ideal``): upstream populations
    earlier in the order have already fired at step t; feedback inputs read step t-1.
    ``differentiable=True`` keeps the autograd graph over all steps with straight-through spikes:
    that is backprop-through-time, the baseline eqspike avoids (memory grows with T).
    ``observer(t, rates, spike_counts)`` is called after every step t = 1..T with the running rates
    a(t) and the spikes fired so far, so that statistics at many T come from one simulation.
    ``count_spikes=False`` skips the per-neuron spike counts (energy accounting): spike_counts is then
    empty, and each step is one elementwise operation per neuron cheaper.
    """
    check_int_at_least("time_steps", time_steps, 1)
    grad_mode = torch.enable_grad() if differentiable else torch.no_grad()
    with grad_mode:
        neurons = {p.name: IFPopulation(rate_map.neuron_of(p), differentiable, count_spikes) for p in rate_map.populations}
        running: dict[str, Tensor] = dict(rate_map.initial_state)
        trajectory: dict[str, list[Tensor]] = {p.name: [] for p in rate_map.populations}
        for step in range(time_steps):
            for population in rate_map.populations:
                ideal = population.current(*[running[name] for name in population.inputs])
                neurons[population.name].step_ideal(ideal)
                running[population.name] = neurons[population.name].rate
                if record_trajectory:
                    trajectory[population.name].append(running[population.name].detach().clone())
            if step == 0:
                rate_map.check_state_shapes(running)
            if observer is not None:
                observer(step + 1, running, {name: n.spike_count for name, n in neurons.items() if count_spikes})
        rates = {name: neurons[name].rate for name in neurons}
    return SimulationResult(
        rates=rates,
        trajectory={k: torch.stack(v) for k, v in trajectory.items()} if record_trajectory else None,
        spike_counts={name: n.spike_count for name, n in neurons.items() if count_spikes},
        time_steps=time_steps,
    )
