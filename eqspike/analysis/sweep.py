"""One pass of a trained spiking student over a split, shared by the diagnostics, ``eqspike evaluate``
and ``eqspike energy`` (docs/design.md §10).

For every batch the equilibrium a* is solved directly, and the spiking network is simulated once up
to the largest T asked for. An observer reads the running rates a_hat(t) and spike counts at each
requested T, so every T costs nothing extra. The pass collects the logits at each T and at a*, the
spikes and synaptic accumulates per population, and (``detailed``) the convergence statistics of
``eqspike.analysis.diagnostics``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from eqspike.core.neurons import time_step_rate
from eqspike.core.simulation import simulate
from eqspike.data.batches import EncodedSplit, sequential_batches
from eqspike.data.evaluation import metrics_from_logits
from eqspike.data.tasks import TaskData
from eqspike.runtime.progress import progress
from eqspike.students.energy import ACCUMULATE_PJ, MAC_PJ, StudentEnergy, synaptic_accumulates


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

    @classmethod
    def empty(cls, names: list[str], time_steps: list[int]) -> _Sweep:
        """Nothing collected yet: zero sums per population and T, no logits."""
        n_T = len(time_steps)
        return cls(
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


@dataclass
class _Batch:
    """One batch of the pass: its example indices, inputs, padding mask (``token``: 1 on the non-pad
    tokens, broadcast over the neurons), rate map and equilibrium rates a*."""

    index: Tensor
    inputs: dict[str, Tensor]
    token: Tensor
    rate_map: object
    star: Mapping[str, Tensor]


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
    """The pass over ``split`` (its first ``max_batches`` batches) at each T of ``time_steps`` (sorted)."""
    cfg = student.config
    names = student.population_names(cfg.num_hidden_layers)
    s = _Sweep.empty(names, time_steps)
    total = -(-len(split) // batch_size)
    if max_batches:
        total = min(total, max_batches)
    batches = sequential_batches(split, batch_size)
    for number, batch in enumerate(progress(batches, total=total, desc=desc)):
        if max_batches and number >= max_batches:
            break
        index = batch.pop("index")
        batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        _sweep_batch(student, s, index, batch, names, time_steps, detailed)
    return s


def _sweep_batch(
    student, s: _Sweep, index: Tensor, batch: dict[str, Tensor], names: list[str], time_steps: list[int], detailed: bool
) -> None:
    """One batch added to ``s``: a* solved directly and its logits, then one simulation to the largest T
    whose observer records, at each requested T, the logits, spikes and synaptic accumulates (and,
    ``detailed``, the convergence statistics)."""
    cfg = student.config
    last = f"block{cfg.num_hidden_layers - 1}.output"
    index_of = {t: k for k, t in enumerate(time_steps)}
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
    b = _Batch(index, batch, token, rate_map, star)

    def observer(t: int, rates: Mapping[str, Tensor], counts: Mapping[str, Tensor]) -> None:
        if t not in index_of:
            return
        k = index_of[t]
        s.logits[t].append((index, student.head(student.population_values(last, rates[last])).float().cpu()))
        for name in names:
            s.accumulates_by[name][k] += float(synaptic_accumulates({name: counts[name]}, fan).sum())
            s.spikes[name][k] += float((counts[name] * token).sum())
        s.accumulates[k] += float(synaptic_accumulates(counts, fan).sum())
        if detailed:
            _record_convergence(student, s, b, names, k, t, rates, counts)

    simulate(rate_map, time_steps[-1], observer=observer, count_spikes=True)


def _record_convergence(
    student,
    s: _Sweep,
    b: _Batch,
    names: list[str],
    k: int,
    t: int,
    rates: Mapping[str, Tensor],
    counts: Mapping[str, Tensor],
) -> None:
    """At T = t (index k): the logits of the T-step quantized rate map, and per population the summed
    |a_hat(T) - a*|, the neurons off that map's rates (mismatch) and off round(T x) of their own final
    current (lag), the residual ||Phi(a_hat) - a_hat|| / ||a_hat||, and the silent and saturated neurons."""
    last = f"block{student.config.num_hidden_layers - 1}.output"
    batch, token, rate_map, star = b.inputs, b.token, b.rate_map, b.star
    quantized = student.equilibrium(
        student.rate_map(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], t), mode="solve"
    ).rates
    s.quantized_logits[t].append((b.index, student.head(student.population_values(last, quantized[last])).float().cpu()))
    for name in names:
        s.error_sum[name][k] += float(((rates[name] - star[name]).abs() * token).sum())
        s.mismatch[name][k] += float((((rates[name] - quantized[name]).abs() > 0.25 / t) * token).sum())
    for population in rate_map.populations:  # the neuron's own final current, from the simulated upstream
        target = time_step_rate(population.current(*[rates[n] for n in population.inputs]), rate_map.neuron_of(population), t)
        s.lag[population.name][k] += float((((rates[population.name] - target).abs() > 0.25 / t) * token).sum())
    s.residual_sum[k] += rate_map.residual(rates)[0] * len(b.index)
    for name in names:
        s.silent[name][k] += float(((counts[name] == 0) * token).sum())
        s.saturated[name][k] += float(((counts[name] >= t) * token).sum())


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
