"""The equilibrium layer: it finds the fixed point of a rate map Phi (``core.rate_map``), by a torchdeq
solver or by running the spiking network (``core.simulation``), and backpropagates by implicit
differentiation (docs/design.md §2-3).

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

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torchdeq import get_deq
from torchdeq.solver import register_solver
from torchdeq.solver.utils import dummy_solver_stat

from eqspike.core.rate_map import RateMap
from eqspike.core.simulation import SimulationResult, simulate
from eqspike.errors import (
    check_choice,
    check_in_interval,
    check_int_at_least,
    check_positive,
)

FORWARD_MODES = ("solve", "simulate")


SOLVERS = ("anderson", "broyden", "fixed_point_iter")


BACKWARD_MODES = ("ift", "phantom")


_PRECOMPUTED = "eqspike_precomputed"


def _precomputed_solver(func, x0, max_iter=0, tol=0.0, stop_mode="rel", indexing=None, **kwargs):
    """A torchdeq 'solver' that returns its start point: used when the fixed point was already
    found by the spiking simulation, so that torchdeq attaches the implicit gradient there."""
    return x0, ([x0] if indexing else []), dummy_solver_stat()


register_solver(_PRECOMPUTED, _precomputed_solver)


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
        backward = dict(ift=True) if c.backward == "ift" else dict(ift=False, grad=c.phantom_steps, tau=c.phantom_damping)
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
            # value: the spike rates; gradient: implicit, at the simulated state. Feed-forward, the
            # last step's currents carry it; with feedback, a sweep at torchdeq's state does.
            in_last_step = needs_grad and not rate_map.has_feedback
            simulation = simulate(
                rate_map,
                time_steps,
                record_trajectory=record_trajectory,
                count_spikes=count_spikes,
                anchor_last_step=in_last_step,
            )
            stats = EquilibriumStats(forward=mode, iterations=time_steps, time_steps=time_steps)
            rates = simulation.anchored if in_last_step else simulation.rates
            if needs_grad and rate_map.has_feedback:
                state = self._solve_feedback_state(rate_map, simulation, stats)
                rates = rate_map.anchored_sweep(simulation.rates, state)
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
