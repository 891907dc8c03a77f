"""Spiking equilibrium: the rate map Phi, its spiking simulation, and a layer that finds the fixed
point and backpropagates by implicit differentiation (docs/design.md §2-3).

A network is a list of named populations in topological order. Population l receives the ideal
current F_l(rates of its inputs) and has the equilibrium rate

    a_l* = clamp(F_l(a*) / V_th, lo, 1).

``RateMap.sweep`` evaluates the populations once in order, each reading what its upstream computed
in the same sweep (Gauss-Seidel). An input that names a population at or after the reader is a
*feedback edge*: it reads the previous state. The equilibrium state is therefore only the rates of
the populations read through feedback edges, z, and the network's fixed point is

    z* = Phi(z*),   Phi(z) = sweep(z)[feedback sources].

Without feedback Phi does not depend on z (its Jacobian J is 0): one sweep is the fixed point and the
implicit gradient is exactly one backward pass through that sweep. With feedback the layer uses
torchdeq with ``ift=True``:

    dL/dtheta = (dPhi/dtheta)^T (I - J)^{-T} dL/dz*,   J = dPhi/dz at the z the forward found.

Two forward modes: ``solve`` (a torchdeq solver on Phi; one sweep without feedback) and
``simulate`` (the spiking network run for T steps, no autograd graph). The memory kept for the
backward is one sweep's activations whatever T is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
import torch
from torch import Tensor, nn
from torchdeq import get_deq
from torchdeq.solver import register_solver
from torchdeq.solver.utils import dummy_solver_stat
from eqspike.core.neurons import IFPopulation, NeuronConfig, equilibrium_rate, time_step_rate
from eqspike.errors import check_choice, check_in_interval, check_int_at_least, check_positive


FORWARD_MODES = ("solve", "simulate")


SOLVERS = ("anderson", "broyden", "fixed_point_iter")


BACKWARD_MODES = ("ift", "phantom")


_PRECOMPUTED = "eqspike_precomputed"


def _rate(current: Tensor, neuron: NeuronConfig, time_steps: int | None = None) -> Tensor:
    """The population's rate for a current: the exact equilibrium clamp(I / V_th, lo, 1) (T = infinity),
    or the T-step quantizer Q_T (``time_step_rate``). Rates stay in at least float32 when the current
    comes from autocast (bf16)."""
    current = current.to(torch.promote_types(current.dtype, torch.float32))
    return equilibrium_rate(current, neuron) if time_steps is None else time_step_rate(current, neuron, time_steps)


def _precomputed_solver(func, x0, max_iter=0, tol=0.0, stop_mode="rel", indexing=None, **kwargs):
    """A torchdeq 'solver' that returns its start point: used when the fixed point was already
    found by the spiking simulation, so that torchdeq attaches the implicit gradient there."""
    return x0, ([x0] if indexing else []), dummy_solver_stat()


register_solver(_PRECOMPUTED, _precomputed_solver)


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

    def sweep_until(self, name: str, state: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """The Gauss-Seidel sweep stopped after population ``name`` (what it needs, nothing after)."""
        previous = self.initial_state if state is None else state
        rates: dict[str, Tensor] = {}
        for population in self.populations:
            upstream = [rates[n] if n in rates else previous[n] for n in population.inputs]
            rates[population.name] = _rate(population.current(*upstream), self.neuron_of(population), self.time_steps)
            if population.name == name:
                return rates
        raise ValueError(f"{name!r} is not a population of this rate map")

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


@dataclass
class EquilibriumConfig:
    """How the equilibrium layer finds the fixed point and differentiates through it.

    forward: 'solve' (torchdeq solver on Phi; a single sweep without feedback) or 'simulate'
        (the spiking network for ``time_steps`` steps).
    solver / max_iter / tol: torchdeq forward solver for 'solve' with feedback; tol is relative.
    backward: 'ift' (implicit differentiation, torchdeq ift=True) or 'phantom' (a k-step phantom
        gradient: ``phantom_steps`` damped unrolled applications of Phi; an approximation).
    backward_solver / backward_max_iter / backward_tol: torchdeq solver for beta = J^T beta + g. Plain
        fixed-point iteration is the default: it converges whenever the spiking network itself can
        (spectral radius of J below 1) and needs no history; in float32 Anderson was seen to stall
        near a relative residual of 2e-5 where fixed-point iteration reached 1e-6.
    track_residual: measure ||Phi(a) - a|| / ||a|| at the returned rates (one extra no-grad sweep).
    """

    forward: str = "solve"
    time_steps: int = 32
    solver: str = "anderson"
    max_iter: int = 40
    tol: float = 1e-4
    backward: str = "ift"
    backward_solver: str = "fixed_point_iter"
    backward_max_iter: int = 40
    backward_tol: float = 1e-6
    phantom_steps: int = 5
    phantom_damping: float = 1.0
    track_residual: bool = True

    def __post_init__(self) -> None:
        check_choice("forward", self.forward, FORWARD_MODES)
        check_int_at_least("time_steps", self.time_steps, 1)
        check_choice("solver", self.solver, SOLVERS)
        check_int_at_least("max_iter", self.max_iter, 1)
        check_positive("tol", self.tol)
        check_choice("backward", self.backward, BACKWARD_MODES)
        check_choice("backward_solver", self.backward_solver, SOLVERS)
        check_int_at_least("backward_max_iter", self.backward_max_iter, 1)
        check_positive("backward_tol", self.backward_tol)
        check_int_at_least("phantom_steps", self.phantom_steps, 1)
        check_in_interval("phantom_damping", self.phantom_damping, 0.0, 1.0)
        if self.solver == "anderson" and self.max_iter <= 2:
            # torchdeq's Anderson returns its start point unchanged when max_iter <= 2.
            raise ValueError(f"max_iter={self.max_iter} is too small for solver='anderson'; use at least 3")
        if self.backward_solver == "anderson" and self.backward_max_iter <= 2:
            raise ValueError(
                f"backward_max_iter={self.backward_max_iter} is too small for backward_solver='anderson'; use at least 3"
            )


@dataclass
class EquilibriumStats:
    """What the forward (and, after ``.backward()``, the backward) solve did.

    iterations: solver iterations for 'solve' with feedback, 1 for a single sweep, T for 'simulate'.
    residual: ||Phi(a) - a|| / ||a|| at the returned rates over all populations (None when not tracked);
    population_residuals: the same per population.
    solver_residual: torchdeq's relative residual on the feedback state (None without a solver).
    backward_iterations / backward_residual: filled in by the implicit backward solve.
    """

    forward: str
    iterations: int
    time_steps: int | None = None
    residual: float | None = None
    population_residuals: dict[str, float] = field(default_factory=dict)
    solver_residual: float | None = None
    backward_iterations: int | None = None
    backward_residual: float | None = None


@dataclass
class EquilibriumOutput:
    rates: dict[str, Tensor]
    stats: EquilibriumStats
    trajectory: dict[str, Tensor] | None = None
    spike_counts: dict[str, Tensor] | None = None


def _with_gradient_of(value: Tensor, grad_path: Tensor) -> Tensor:
    """``value`` in the forward, the gradient of ``grad_path`` in the backward."""
    return value + (grad_path - grad_path.detach())


class EquilibriumLayer(nn.Module):
    """Finds the fixed point of a ``RateMap`` and backpropagates by implicit differentiation.

    The rates returned are the ones the forward found (the spike rates for 'simulate'); their
    gradient is the implicit gradient of the equilibrium evaluated at that state. Gradients are
    produced whenever autograd is enabled, in train or eval mode alike.
    """

    def __init__(self, config: EquilibriumConfig | None = None) -> None:
        super().__init__()
        self.config = config or EquilibriumConfig()
        c = self.config
        backward = (
            dict(ift=True)
            if c.backward == "ift"
            else dict(ift=False, grad=c.phantom_steps, tau=c.phantom_damping)
        )
        common = dict(
            core="sliced",
            n_states=1,
            f_max_iter=c.max_iter,
            f_tol=c.tol,
            f_stop_mode="rel",
            b_solver=c.backward_solver,
            b_max_iter=c.backward_max_iter,
            b_tol=c.backward_tol,
            b_stop_mode="rel",
            **backward,
        )
        self.solve_deq = get_deq(f_solver=c.solver, **common)
        self.given_deq = get_deq(f_solver=_PRECOMPUTED, **common)

    def forward(
        self,
        rate_map: RateMap,
        mode: str | None = None,
        time_steps: int | None = None,
        record_trajectory: bool = False,
        count_spikes: bool = False,
    ) -> EquilibriumOutput:
        """Find the rates of every population of ``rate_map`` at equilibrium.

        mode / time_steps override the config for this call (e.g. evaluate a 'solve'-trained
        network by simulation at several T). ``count_spikes``: also return each neuron's number of
        spikes ('simulate' only).
        """
        mode = check_choice("mode", self.config.forward if mode is None else mode, FORWARD_MODES)
        time_steps = self.config.time_steps if time_steps is None else time_steps
        check_int_at_least("time_steps", time_steps, 1)
        needs_grad = torch.is_grad_enabled()

        if mode == "simulate":
            simulation = simulate(rate_map, time_steps, record_trajectory=record_trajectory, count_spikes=count_spikes)
            stats = EquilibriumStats(forward=mode, iterations=time_steps, time_steps=time_steps)
            rates = simulation.rates
            if needs_grad:  # value: the spike rates; gradient: implicit, at the simulated state
                state = self._solve_feedback_state(rate_map, simulation, stats) if rate_map.has_feedback else None
                swept = rate_map.sweep(state)
                rates = {name: _with_gradient_of(rates[name], swept[name]) for name in swept}
        else:
            simulation = None
            stats = EquilibriumStats(forward=mode, iterations=1)
            state = self._solve_feedback_state(rate_map, None, stats) if rate_map.has_feedback else None
            rates = rate_map.sweep(state)

        if self.config.track_residual:
            stats.residual, stats.population_residuals = rate_map.residual(rates)
        return EquilibriumOutput(
            rates=rates,
            stats=stats,
            trajectory=simulation.trajectory if simulation else None,
            spike_counts=simulation.spike_counts if simulation and count_spikes else None,
        )

    def _solve_feedback_state(
        self,
        rate_map: RateMap,
        simulation: SimulationResult | None,
        stats: EquilibriumStats,
    ) -> dict[str, Tensor]:
        """z* = Phi(z*) on the feedback state through torchdeq; the returned state carries the
        implicit (or phantom) gradient."""
        names = rate_map.state_names
        if simulation is None:
            deq, start = self.solve_deq, [rate_map.initial_state[n] for n in names]
        else:
            deq, start = self.given_deq, [simulation.rates[n].detach() for n in names]

        # Under autocast (bf16) the rate map runs in low precision but the solvers do not: their
        # least-squares and history updates stay in float32 on the float32 state.
        device_type = start[0].device.type
        autocast = torch.is_autocast_enabled(device_type)
        autocast_dtype = torch.get_autocast_dtype(device_type)

        def phi(*state: Tensor):
            with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast):
                swept = rate_map.sweep(dict(zip(names, state)))
            out = tuple(swept[n] for n in names)
            return out[0] if len(out) == 1 else out

        def backward_writer(info) -> None:
            stats.backward_iterations = int(info["nstep"].max().item())
            stats.backward_residual = float(info["rel_lowest"].max().item())

        deq.train(torch.is_grad_enabled())  # torchdeq's eval mode returns z* without a gradient
        with torch.autocast(device_type, enabled=False):
            z_out, info = deq(phi, start[0] if len(start) == 1 else start, backward_writer=backward_writer)
        z_star = z_out[-1]
        z_star = [z_star] if torch.is_tensor(z_star) else list(z_star)
        if simulation is None:
            stats.iterations = int(info["nstep"].max().item())
            stats.solver_residual = float(info["rel_lowest"].max().item())
        return dict(zip(names, z_star))
