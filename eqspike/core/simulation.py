"""The spiking network of a rate map, run for T steps: every population driven by the increment of its
cumulative ideal current (docs/design.md §2); without an autograd graph, or with one for
backprop-through-time (the baseline eqspike avoids).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from eqspike.core.if_population import IFPopulation
from eqspike.core.neurons import equilibrium_rate
from eqspike.core.rate_map import Population, RateMap
from eqspike.errors import check_int_at_least


@dataclass
class SimulationResult:
    """Average spike rates after T steps; per-step rates a(t) (shape (T, ...)) on request; the
    number of spikes each neuron fired, sum_t |s(t)|."""

    rates: dict[str, Tensor]
    trajectory: dict[str, Tensor] | None
    spike_counts: dict[str, Tensor]
    time_steps: int
    # with anchor_last_step: the rates, carrying the implicit gradient at the simulated state
    anchored: dict[str, Tensor] | None = None


Observer = Callable[[int, Mapping[str, Tensor], Mapping[str, Tensor]], None]


def simulate(
    rate_map: RateMap,
    time_steps: int,
    record_trajectory: bool = False,
    differentiable: bool = False,
    observer: Observer | None = None,
    count_spikes: bool = True,
    anchor_last_step: bool = False,
    analog: frozenset[str] = frozenset(),
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
    ``anchor_last_step=True`` (a feed-forward rate map; no autograd graph over the other steps) runs
    the last step's currents with autograd and returns ``anchored``: the final rates with the map's
    local gradient at the currents of the final upstream rates, what ``RateMap.anchored_sweep`` gives
    after the simulation, without a sweep of its own (at step T every population's upstream rates
    are already the final ones).
    ``analog``: populations that do not spike: at every step their rate is the exact one,
    clamp(I / V_th, lo, 1), of their current (a population put back to the ANN, to attribute the
    spiking network's error; they count no spikes).
    """
    _check_options(rate_map, time_steps, analog, differentiable, anchor_last_step)
    grad_mode = torch.enable_grad() if differentiable else torch.no_grad()
    with grad_mode:
        neurons = _spiking_populations(rate_map, analog, differentiable, count_spikes)
        running: dict[str, Tensor] = dict(rate_map.initial_state)
        trajectory: dict[str, list[Tensor]] = {p.name: [] for p in rate_map.populations}
        anchored: dict[str, Tensor] = {}
        for step in range(time_steps):
            last = anchor_last_step and step == time_steps - 1
            for population in rate_map.populations:
                if last:
                    _anchored_step(rate_map, population, neurons, running, anchored, count_spikes)
                else:
                    _step(rate_map, population, neurons, running, analog)
                if record_trajectory:
                    trajectory[population.name].append(running[population.name].detach().clone())
            if step == 0:
                rate_map.check_state_shapes(running)
            if observer is not None:
                observer(step + 1, running, {name: n.spike_count for name, n in neurons.items() if count_spikes})
        rates = {p.name: running[p.name] for p in rate_map.populations}
    return SimulationResult(
        rates=rates,
        trajectory={k: torch.stack(v) for k, v in trajectory.items()} if record_trajectory else None,
        spike_counts={name: n.spike_count for name, n in neurons.items() if count_spikes},
        time_steps=time_steps,
        anchored=anchored if anchor_last_step else None,
    )


def _check_options(
    rate_map: RateMap, time_steps: int, analog: frozenset[str], differentiable: bool, anchor_last_step: bool
) -> None:
    """Refuse a simulation ``simulate`` cannot run: T < 1, analog populations the rate map lacks or with
    autograd, or an anchored last step of a rate map with feedback or under backprop-through-time."""
    check_int_at_least("time_steps", time_steps, 1)
    unknown = set(analog) - {p.name for p in rate_map.populations}
    if unknown:
        raise ValueError(f"analog names populations the rate map does not have: {sorted(unknown)}")
    if analog and (differentiable or anchor_last_step):
        raise ValueError("analog populations are for evaluation: not with differentiable or anchor_last_step")
    if anchor_last_step and (differentiable or rate_map.has_feedback):
        raise ValueError("anchor_last_step needs a feed-forward rate map and differentiable=False")


def _spiking_populations(
    rate_map: RateMap, analog: frozenset[str], differentiable: bool, count_spikes: bool
) -> dict[str, IFPopulation]:
    """The state of every population that spikes (all but the ``analog`` ones), by name, before step 1."""
    return {
        p.name: IFPopulation(rate_map.neuron_of(p), differentiable, count_spikes)
        for p in rate_map.populations
        if p.name not in analog
    }


def _step(
    rate_map: RateMap,
    population: Population,
    neurons: dict[str, IFPopulation],
    running: dict[str, Tensor],
    analog: frozenset[str],
) -> None:
    """One step t of one population: its ideal current F(a(t)) from the running upstream rates drives its
    neurons (``IFPopulation.step_ideal``), whose rate a(t) replaces its running rate; an analog
    population takes the exact rate clamp(F / V_th, lo, 1) instead."""
    ideal = population.current(*[running[name] for name in population.inputs])
    if population.name in analog:
        running[population.name] = equilibrium_rate(ideal, rate_map.neuron_of(population))
    else:
        neurons[population.name].step_ideal(ideal)
        running[population.name] = neurons[population.name].rate


def _anchored_step(
    rate_map: RateMap,
    population: Population,
    neurons: dict[str, IFPopulation],
    running: dict[str, Tensor],
    anchored: dict[str, Tensor],
    count_spikes: bool,
) -> None:
    """Step T of one population with ``anchor_last_step``: its ideal current with autograd from the
    anchored (final) upstream rates drives its neurons, and ``anchored`` gains its final rate carrying
    the map's local gradient at that current (``RateMap.anchored_rate``)."""
    with torch.enable_grad():
        ideal = population.current(*[anchored[n] if n in anchored else running[n] for n in population.inputs])
    neurons[population.name].step_ideal(ideal.detach())
    running[population.name] = neurons[population.name].rate
    with torch.enable_grad():
        anchored[population.name] = rate_map.anchored_rate(population, ideal, running[population.name])
    if not count_spikes:  # its state is done with: freed while the graph of the step grows
        del neurons[population.name]
