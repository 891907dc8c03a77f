"""Convergence diagnostics and energy of a trained spiking student (docs/design.md §10).

For every batch the equilibrium a* is solved directly, and the spiking network is simulated once up
to the largest T asked for. An observer reads the running rates a_hat(t) and spike counts at each
requested T, so every T costs nothing extra (the pass of ``eqspike.analysis.sweep``). Reported:

  per population: mean |a_hat(T) - a*| over the non-pad tokens and neurons, at each T (expect ~1/T);
                  firing rate (spikes per neuron per step), and the fractions of silent neurons (no
                  spike) and saturated ones (a spike every step), at the largest T;
  per model:      the task metric at each T and at the exact equilibrium; the equilibrium residual
                  ||Phi(a) - a|| / ||a|| and solver iterations; the spectral radius of the rate map's
                  Jacobian at the fixed point (power method) when the feedback edge is on;
  energy:         per example, from the spikes actually fired (eqspike.students.energy), against the teacher.

``score_vs_time_steps`` is the same sweep without the per-population statistics; ``eqspike
evaluate`` uses it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from eqspike.analysis.sweep import _energy_vs_time_steps, _subset_metrics, _Sweep, _sweep
from eqspike.data.batches import EncodedSplit
from eqspike.data.tasks import TaskData
from eqspike.errors import EqspikeError
from eqspike.students.energy import ACCUMULATE_PJ, MAC_PJ, StudentEnergy

DEFAULT_TIME_STEPS = (1, 2, 4, 8, 16, 32, 64, 128)


def check_time_steps(time_steps: Sequence[Any]) -> list[int]:
    bad = [t for t in time_steps if isinstance(t, bool) or not isinstance(t, int) or t < 1]
    if bad or not time_steps:
        raise EqspikeError(f"time steps must be positive integers; got {list(time_steps) if not bad else bad}")
    return sorted(set(time_steps))


@dataclass
class PopulationDiagnostics:
    """One population: mean |a_hat(T) - a*| at each T; spikes per neuron per step and the fractions of
    silent neurons (no spike yet) and saturated ones (a spike every step) at each T, and (the last
    three fields) at the largest T."""

    name: str
    rate_error: list[float]
    firing_rate: float
    silent_frac: float
    saturated_frac: float
    firing_vs_T: list[float] = field(default_factory=list)
    silent_vs_T: list[float] = field(default_factory=list)
    saturated_vs_T: list[float] = field(default_factory=list)
    mismatch_vs_T: list[float] = field(default_factory=list)  # fraction of neurons whose a_hat(T) != Q_T map's
    lag_vs_T: list[float] = field(default_factory=list)  # fraction whose count != round(T x) of their own final current


@dataclass
class Diagnostics:
    time_steps: list[int]
    metric: str
    score_vs_T: list[float]
    solve_score: float
    mean_rate_error: list[float]
    populations: list[PopulationDiagnostics]
    energy: dict[str, Any]
    energy_vs_T: list[dict[str, float]]
    firing_vs_T: list[float]  # spikes per neuron per step over all populations, at each T
    quantized_score_vs_T: list[float]  # the metric of the T-step quantized rate map (what T-aware training fits)
    mismatch_vs_T: list[float]  # fraction of all neurons whose simulated rate at T differs from that map's
    lag_vs_T: list[float]  # fraction of all neurons that ended off the count their own final current asks for
    residual: float
    residual_vs_T: list[float]
    solver_iterations: int
    spectral_radius: float | None
    examples: int
    teacher_score: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_vs_time_steps(
    student,
    task: TaskData,
    splits: Mapping[str, EncodedSplit],
    time_steps: Sequence[int],
    batch_size: int,
    device: torch.device,
    predictions: dict[str, dict[int, np.ndarray]] | None = None,
) -> list[dict[str, Any]]:
    """The task's metrics of the spiking student at each T (one simulation to the largest T per batch),
    and its energy per example relative to the teacher's on the main dev split (``energy_ratio``).
    ``predictions``, when given, receives split -> T -> the predicted label (or value) of each example,
    in the split's order."""
    time_steps = check_time_steps(time_steps)
    rows = {t: {"time_steps": t, "metrics": {}} for t in time_steps}
    for name, split in splits.items():
        sweep = _sweep(student, split, time_steps, batch_size, device, None, detailed=False, desc=f"simulate {name}")
        prefix = "" if name == task.main_split else f"{name}/"
        for t in time_steps:
            rows[t]["metrics"].update({prefix + k: v for k, v in _subset_metrics(task, split, sweep.logits[t]).items()})
            if predictions is not None:
                index = torch.cat([i for i, _ in sweep.logits[t]])
                logits = torch.cat([v for _, v in sweep.logits[t]])[index.argsort()].numpy()
                predictions.setdefault(name, {})[t] = logits.reshape(-1) if task.is_regression else logits.argmax(-1)
        if name == task.main_split or len(splits) == 1:
            for energy in _energy_vs_time_steps(StudentEnergy.of(student.config), sweep, time_steps):
                rows[energy["time_steps"]]["energy_ratio"] = energy["ratio"]
    for row in rows.values():
        row["score"] = row["metrics"][task.metric]
    return list(rows.values())


def diagnose(
    student,
    task: TaskData,
    split: EncodedSplit,
    time_steps: Sequence[int] = DEFAULT_TIME_STEPS,
    batch_size: int = 32,
    max_batches: int | None = None,
    device: torch.device | str = "cpu",
    teacher_score: float | None = None,
) -> Diagnostics:
    """Convergence, accuracy-vs-T and energy of ``student`` on ``split`` (see the module docstring)."""
    time_steps = check_time_steps(time_steps)
    device = torch.device(device)
    student = student.to(device).eval()
    cfg = student.config
    s = _sweep(student, split, time_steps, batch_size, device, max_batches, detailed=True, desc="diagnose")
    examples = len(s.lengths)
    names = student.population_names(cfg.num_hidden_layers)
    populations = [_population_diagnostics(s, name, time_steps) for name in names]
    mean_rate_error = [float(np.mean([p.rate_error[k] for p in populations])) for k in range(len(time_steps))]
    scores = [_subset_metrics(task, split, s.logits[t])[task.metric] for t in time_steps]
    energy_vs_T, energy = _energy(cfg, s, time_steps)
    return Diagnostics(
        time_steps=time_steps,
        metric=task.metric,
        score_vs_T=scores,
        solve_score=_subset_metrics(task, split, s.solve_logits)[task.metric],
        mean_rate_error=mean_rate_error,
        populations=populations,
        energy=energy,
        energy_vs_T=energy_vs_T,
        firing_vs_T=[
            float(sum(v[k] for v in s.spikes.values()) / (sum(s.element_count.values()) * t)) for k, t in enumerate(time_steps)
        ],
        quantized_score_vs_T=[_subset_metrics(task, split, s.quantized_logits[t])[task.metric] for t in time_steps],
        mismatch_vs_T=[
            float(sum(v[k] for v in s.mismatch.values()) / sum(s.element_count.values())) for k in range(len(time_steps))
        ],
        lag_vs_T=[float(sum(v[k] for v in s.lag.values()) / sum(s.element_count.values())) for k in range(len(time_steps))],
        residual=float(np.mean(s.residual)) if s.residual else 0.0,
        residual_vs_T=[float(r / examples) for r in s.residual_sum],
        solver_iterations=s.iterations,
        spectral_radius=float(np.mean(s.spectral_radius)) if s.spectral_radius else None,
        examples=examples,
        teacher_score=teacher_score,
    )


def _population_diagnostics(s: _Sweep, name: str, time_steps: list[int]) -> PopulationDiagnostics:
    """One population's statistics from the sweep's sums, per neuron over the non-pad tokens: mean
    |a_hat(T) - a*|, spikes per neuron per step, silent, saturated, mismatched and lagging fractions."""
    elements = max(s.element_count[name], 1.0)
    firing = [float(s.spikes[name][k] / (elements * t)) for k, t in enumerate(time_steps)]
    silent = [float(v / elements) for v in s.silent[name]]
    saturated = [float(v / elements) for v in s.saturated[name]]
    return PopulationDiagnostics(
        name=name,
        rate_error=[float(e / elements) for e in s.error_sum[name]],
        firing_rate=firing[-1],
        silent_frac=silent[-1],
        saturated_frac=saturated[-1],
        firing_vs_T=firing,
        silent_vs_T=silent,
        saturated_vs_T=saturated,
        mismatch_vs_T=[float(v / elements) for v in s.mismatch[name]],
        lag_vs_T=[float(v / elements) for v in s.lag[name]],
    )


def _energy(cfg, s: _Sweep, time_steps: list[int]) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """The energy per example at each T, and the row at the T the student was trained for (else the
    largest T) with the teacher's MACs and the energies per operation beside it."""
    model = StudentEnergy.of(cfg)
    ann_pj = sum(model.teacher_pj(n) for n in s.lengths) / len(s.lengths)
    energy_vs_T = _energy_vs_time_steps(model, s, time_steps)
    at = cfg.time_steps if cfg.time_steps in time_steps else time_steps[-1]
    energy = dict(energy_vs_T[time_steps.index(at)])
    energy.update(
        ann_macs=ann_pj / MAC_PJ,
        accumulate_pj=ACCUMULATE_PJ,
        mac_pj=MAC_PJ,
        teacher_layers=model.teacher_layers,
        note="per example; ratio = snn_pj / ann_pj",
    )
    return energy_vs_T, energy
