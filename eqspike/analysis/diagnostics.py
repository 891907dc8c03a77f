"""Convergence diagnostics and energy of a trained spiking student (docs/design.md §10).

For every batch the equilibrium a* is solved directly, and the spiking network is simulated once up
to the largest T asked for. An observer reads the running rates a_hat(t) and spike counts at each
requested T, so every T costs nothing extra. Reported:

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
from torch import Tensor

from eqspike.core.neurons import time_step_rate
from eqspike.core.simulation import simulate
from eqspike.data.batches import EncodedSplit, sequential_batches
from eqspike.data.evaluation import metrics_from_logits
from eqspike.data.tasks import TaskData
from eqspike.errors import EqspikeError
from eqspike.runtime.progress import progress
from eqspike.students.energy import ACCUMULATE_PJ, MAC_PJ, StudentEnergy, synaptic_accumulates

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


@dataclass
class _Sweep:
    """What one pass over the data collected."""

    logits: dict[int, list[tuple[Tensor, Tensor]]]
    quantized_logits: dict[int, list[tuple[Tensor, Tensor]]]
    solve_logits: list[tuple[Tensor, Tensor]]
    mismatch: dict[str, np.ndarray]
    lag: dict[str, np.ndarray]
    error_sum: dict[str, np.ndarray]
    residual_sum: np.ndarray
    element_count: dict[str, float]
    spikes: dict[str, np.ndarray]
    silent: dict[str, np.ndarray]
    saturated: dict[str, np.ndarray]
    accumulates: np.ndarray
    accumulates_by: dict[str, np.ndarray]  # per population (spikes x fan-out)
    lengths: list[int]
    residual: list[float]
    iterations: int
    spectral_radius: list[float]


@torch.no_grad()
def _sweep(
    student,
    split: EncodedSplit,
    time_steps: list[int],
    batch_size: int,
    device: torch.device,
    max_batches: int | None,
    detailed: bool,
    desc: str,
) -> _Sweep:
    cfg = student.config
    names = student.population_names(cfg.num_hidden_layers)
    last = f"block{cfg.num_hidden_layers - 1}.output"
    index_of = {t: k for k, t in enumerate(time_steps)}
    T_max = time_steps[-1]
    n_T = len(time_steps)
    s = _Sweep(
        logits={t: [] for t in time_steps},
        quantized_logits={t: [] for t in time_steps},
        solve_logits=[],
        mismatch={n: np.zeros(n_T) for n in names},
        lag={n: np.zeros(n_T) for n in names},
        error_sum={n: np.zeros(n_T) for n in names},
        residual_sum=np.zeros(n_T),
        element_count={n: 0.0 for n in names},
        spikes={n: np.zeros(n_T) for n in names},
        silent={n: np.zeros(n_T) for n in names},
        saturated={n: np.zeros(n_T) for n in names},
        accumulates=np.zeros(n_T),
        accumulates_by={n: np.zeros(n_T) for n in names},
        lengths=[],
        residual=[],
        iterations=0,
        spectral_radius=[],
    )
    total = -(-len(split) // batch_size)
    if max_batches:
        total = min(total, max_batches)
    batches = sequential_batches(split, batch_size)
    for number, batch in enumerate(progress(batches, total=total, desc=desc)):
        if max_batches and number >= max_batches:
            break
        index = batch.pop("index")
        batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        mask = batch["attention_mask"]
        rate_map = student.rate_map(batch["input_ids"], mask, batch["token_type_ids"])
        solved = student.equilibrium(rate_map, mode="solve")
        star = solved.rates
        s.solve_logits.append((index, student.head(student.population_values(last, star[last])).float().cpu()))
        token = mask[:, :, None].to(star[names[0]].dtype)
        s.lengths += mask.sum(1).tolist()
        fan = StudentEnergy.of(cfg).fan_out(mask)
        for name in names:
            s.element_count[name] += float(token.sum()) * star[name].shape[-1]
        if detailed:
            residual, _ = rate_map.residual(star)
            s.residual.append(residual)
            s.iterations = max(s.iterations, solved.stats.iterations)
            if rate_map.has_feedback:
                s.spectral_radius.append(_spectral_radius(rate_map, star))

        def observer(t: int, rates: Mapping[str, Tensor], counts: Mapping[str, Tensor]) -> None:
            if t not in index_of:
                return
            k = index_of[t]
            s.logits[t].append((index, student.head(student.population_values(last, rates[last])).float().cpu()))
            for name in names:
                s.accumulates_by[name][k] += float(synaptic_accumulates({name: counts[name]}, fan).sum())
                s.spikes[name][k] += float((counts[name] * token).sum())
            s.accumulates[k] += float(synaptic_accumulates(counts, fan).sum())
            if not detailed:
                return
            quantized = student.equilibrium(
                student.rate_map(batch["input_ids"], mask, batch["token_type_ids"], t), mode="solve"
            ).rates
            s.quantized_logits[t].append((index, student.head(student.population_values(last, quantized[last])).float().cpu()))
            for name in names:
                s.error_sum[name][k] += float(((rates[name] - star[name]).abs() * token).sum())
                s.mismatch[name][k] += float((((rates[name] - quantized[name]).abs() > 0.25 / t) * token).sum())
            for population in rate_map.populations:  # the neuron's own final current, from the simulated upstream
                target = time_step_rate(
                    population.current(*[rates[n] for n in population.inputs]), rate_map.neuron_of(population), t
                )
                s.lag[population.name][k] += float((((rates[population.name] - target).abs() > 0.25 / t) * token).sum())
            s.residual_sum[k] += rate_map.residual(rates)[0] * len(index)
            for name in names:
                s.silent[name][k] += float(((counts[name] == 0) * token).sum())
                s.saturated[name][k] += float(((counts[name] >= t) * token).sum())

        simulate(rate_map, T_max, observer=observer, count_spikes=True)
    return s


def _energy_vs_time_steps(model: StudentEnergy, s: _Sweep, time_steps: list[int]) -> list[dict[str, float]]:
    """Per example at each T: the synaptic accumulates of the spikes fired, the dense part's MACs, the
    network's energy E_T = e_AC * accumulates + e_MAC * MACs (pJ) and its ratio to the teacher's."""
    examples = max(len(s.lengths), 1)
    ann_pj = sum(model.teacher_pj(n) for n in s.lengths) / examples
    rows = []
    for k, t in enumerate(time_steps):
        accumulates = s.accumulates[k] / examples
        dense_pj = sum(model.dense_pj(n, t) for n in s.lengths) / examples
        snn = ACCUMULATE_PJ * accumulates + dense_pj
        rows.append(
            {
                "time_steps": t,
                "accumulates": accumulates,
                "macs": dense_pj / MAC_PJ,
                "snn_pj": snn,
                "ann_pj": ann_pj,
                "ratio": snn / ann_pj,
            }
        )
    return rows


def _subset_metrics(task: TaskData, split: EncodedSplit, pieces: list[tuple[Tensor, Tensor]]) -> dict[str, float]:
    """Metrics over the examples that were evaluated (all of them unless max_batches cut the split)."""
    index = torch.cat([i for i, _ in pieces])
    logits = torch.cat([v for _, v in pieces]).numpy()
    return metrics_from_logits(task, logits, np.asarray(split.labels)[index.numpy()])


def _spectral_radius(rate_map, star: Mapping[str, Tensor], iterations: int = 50) -> float:
    """|largest eigenvalue| of dPhi/dz at z* (power method on vector-Jacobian products)."""
    from torchdeq import power_method

    names = rate_map.state_names
    with torch.enable_grad():
        z0 = star[names[0]].detach().clone().requires_grad_()
        f0 = rate_map.sweep({names[0]: z0})[names[0]]
        _, eigenvalue = power_method(f0, z0, n_iters=iterations)
    return float(eigenvalue.mean())


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
    populations = []
    for name in names:
        elements = max(s.element_count[name], 1.0)
        firing = [float(s.spikes[name][k] / (elements * t)) for k, t in enumerate(time_steps)]
        silent = [float(v / elements) for v in s.silent[name]]
        saturated = [float(v / elements) for v in s.saturated[name]]
        populations.append(
            PopulationDiagnostics(
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
        )
    mean_rate_error = [float(np.mean([p.rate_error[k] for p in populations])) for k in range(len(time_steps))]
    scores = [_subset_metrics(task, split, s.logits[t])[task.metric] for t in time_steps]

    model = StudentEnergy.of(cfg)
    ann_pj = sum(model.teacher_pj(n) for n in s.lengths) / examples
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
