"""Where the points go: a trained spiking student's accuracy gap, split over its populations
(docs/design.md §10).

For a population with current F and threshold theta, three networks with the same trained weights:

    dense-equivalent   v = F                          (no threshold: the ANN these weights are)
    clipped (T = inf)  v = clamp(F, lo theta, theta)  (the exact IF equilibrium)
    spiking at T       v = theta a_hat(T)             (the simulated IF neurons' average rates)

The spiking network's gap is attributed by putting back one kind of population (key, value, ..., in
every block), one block, or the head's population (the last block's output, which the classifier
reads): its neurons do not spike, and at every step its rate is the exact one of its current, clipped
(``mode`` 'clipped') or without a threshold ('dense'), while every other population spikes as trained;
the score it recovers at each T. One simulation to the largest T serves every T. Per population at T,
with x = F / theta the neuron's current from the upstream rates at T, over the non-pad tokens and neurons:

    clipped_frac   x outside [lo, 1]
    zeroed_frac    x inside it, not 0, but Q_T(x) = 0: below the resolution 1 / T
    clip_error     ||clamp(x) - x|| / ||x||           (relative, in decoded values v = theta x)
    spike_error    ||a_hat(T) - clamp(x)|| / ||x||    (rounding, hysteresis and lag together)

and for the logits: the fraction of examples whose class agrees with the dense-equivalent network's,
and the median margin between the two largest logits. Given a trained dense student of the same shape
(``--student-type dense``), per population also its activations h on the same inputs (the tensor at the
same place of its block): the fractions the population could not carry at T (|h| above the threshold;
0 < |h| below the resolution) and the distance ||theta a_hat(T) - h|| / ||h||. The networks are built in
``eqspike.analysis.restoration``; the tables and files are written by ``eqspike.analysis.attribution_report``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from eqspike.analysis.diagnostics import check_time_steps
from eqspike.analysis.restoration import dense_activations, exact_logits, run_restored
from eqspike.analysis.sweep import _subset_metrics
from eqspike.core.neurons import time_step_rate
from eqspike.data.batches import EncodedSplit, sequential_batches
from eqspike.data.tasks import TaskData
from eqspike.runtime.progress import progress

MODES = ("clipped", "dense")


@dataclass
class PopulationGap:
    """One population of the spiking network, at each T of ``Attribution.time_steps``."""

    name: str
    clipped_frac: list[float]
    zeroed_frac: list[float]
    clip_error: list[float]
    spike_error: list[float]
    # against a dense student of the same shape (None without one), its activation h on the same inputs:
    dense_clipped_frac: list[float] | None = None  # |h| above this population's threshold
    dense_zeroed_frac: list[float] | None = None  # 0 < |h| below the resolution at T (theta / 2BT for rounding)
    distance_to_dense: list[float] | None = None  # ||theta a_hat(T) - h|| / ||h||


@dataclass
class Attribution:
    """Scores of the three networks and of the partial restorations (``recovered``: part -> mode -> the
    score at each T minus the spiking network's at that T)."""

    metric: str
    num_labels: int
    time_steps: list[int]
    dense_equivalent_score: float
    clipped_score: float
    spiking_score: list[float]
    recovered: dict[str, dict[str, list[float]]]
    agreement_with_dense_equivalent: list[float] | None  # None for regression
    median_margin: list[float]
    dense_equivalent_median_margin: float
    populations: list[PopulationGap]
    examples: int
    reference: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_parts(names: Sequence[str], layers: int) -> dict[str, list[str]]:
    """The groups of populations put back together: each kind over all blocks, each block, the head's."""
    parts: dict[str, list[str]] = {}
    for name in names:
        parts.setdefault("kind:" + name.split(".")[-1], []).append(name)
    for m in range(layers):
        parts[f"block{m}"] = [n for n in names if n.startswith(f"block{m}.")]
    parts["head population"] = [f"block{layers - 1}.output"]
    return parts


def _add_statistics(
    sums: dict[str, np.ndarray],
    k: int,
    t: int,
    rate_map,
    rates: Mapping[str, Tensor],
    thresholds: Mapping[str, Tensor],
    token: Tensor,
) -> None:
    """One batch's counts and squared errors (the module docstring) at T index k, added to ``sums[name][k]``."""
    for population in rate_map.populations:
        neuron = rate_map.neuron_of(population)
        current = population.current(*[rates[n] for n in population.inputs])
        x = current / neuron.threshold
        clamped = x.clamp(neuron.lowest_rate, 1.0)
        inside = x == clamped
        theta = thresholds[population.name]
        weight = token.expand_as(x)
        s = sums[population.name][k]
        s[0] += float((~inside * weight).sum())
        s[1] += float(((inside & (time_step_rate(current, neuron, t) == 0) & (x != 0)) * weight).sum())
        s[2] += float(((theta * (clamped - x)) ** 2 * weight).sum())
        s[3] += float(((theta * (rates[population.name] - clamped)) ** 2 * weight).sum())
        s[4] += float(((theta * x) ** 2 * weight).sum())
        s[5] += float(weight.sum())


def _add_dense_comparison(
    sums: dict[str, np.ndarray],
    k: int,
    t: int,
    rate_map,
    rates: Mapping[str, Tensor],
    thresholds: Mapping[str, Tensor],
    token: Tensor,
    dense: Mapping[str, Tensor],
) -> None:
    """The dense student's activations against the population at T index k (the module docstring)."""
    for population in rate_map.populations:
        neuron = rate_map.neuron_of(population)
        theta = thresholds[population.name]  # the decoded value is theta * rate
        h = dense[population.name]
        weight = token.expand_as(h)
        step = t * neuron.levels  # a burst neuron's rate moves in steps of 1 / (B T)
        resolution = theta / (2 * step) if neuron.rounding == "round" else theta / step
        s = sums[population.name][k]
        s[0] += float((((h > theta) | (h < theta * neuron.lowest_rate)) * weight).sum())
        s[1] += float((((h.abs() < resolution) & (h != 0)) * weight).sum())
        s[2] += float(((theta * rates[population.name] - h) ** 2 * weight).sum())
        s[3] += float((h**2 * weight).sum())


def _margin(logits: Tensor) -> Tensor:
    """The largest logit minus the second (|logit| with one output)."""
    if logits.shape[-1] == 1:
        return logits[:, 0].abs()
    top = logits.topk(2, dim=-1).values
    return top[:, 0] - top[:, 1]


@torch.no_grad()
def attribute(
    student,
    task: TaskData,
    split: EncodedSplit,
    time_steps: Sequence[int] = (2, 4, 8),
    batch_size: int = 32,
    max_batches: int | None = None,
    device: torch.device | str = "cpu",
    modes: Sequence[str] = ("clipped",),
    parts: Mapping[str, Sequence[str]] | None = None,
    dense_student=None,
) -> Attribution:
    """The attribution of the module docstring, on ``split`` (its first ``max_batches`` batches).
    ``modes``: how a part is put back ('clipped', 'dense' or both; each costs one simulation per part).
    ``parts``: the groups of populations put back, by name (default: ``default_parts``).
    ``dense_student``: a trained dense student of the same shape, whose activations each population is
    compared with."""
    time_steps = check_time_steps(time_steps)
    modes = _check_modes(modes)
    device = torch.device(device)
    student = student.to(device).eval()
    layers = student.config.num_hidden_layers
    names = student.population_names(layers)
    parts = _check_parts(parts, names, layers)
    tally = _Tally.empty(names, time_steps)
    if dense_student is not None:
        dense_student = _check_dense_student(dense_student, student).to(device).eval()
    thresholds = student.thresholds()
    total = -(-len(split) // batch_size)
    total = min(total, max_batches) if max_batches else total
    for number, batch in enumerate(progress(sequential_batches(split, batch_size), total=total, desc="attribute")):
        if max_batches and number >= max_batches:
            break
        index = batch.pop("index")
        batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        _attribute_batch(student, batch, index, tally, time_steps, modes, parts, thresholds, dense_student)

    def score(key: tuple) -> float:
        return _subset_metrics(task, split, tally.pieces[key])[task.metric]

    spiking_score = [score(("spiking", t)) for t in time_steps]
    recovered = {
        part: {mode: [score((part, mode, t)) - spiking_score[k] for k, t in enumerate(time_steps)] for mode in modes}
        for part in parts
    }
    populations = [_population_gap(name, tally, dense_student is not None) for name in names]
    return Attribution(
        metric=task.metric,
        num_labels=student.config.num_labels,
        time_steps=time_steps,
        dense_equivalent_score=score(("dense",)),
        clipped_score=score(("clipped",)),
        spiking_score=spiking_score,
        recovered=recovered,
        agreement_with_dense_equivalent=None if task.is_regression else (tally.agreement / max(tally.examples, 1)).tolist(),
        median_margin=[float(torch.cat(tally.margins[t]).median()) for t in time_steps],
        dense_equivalent_median_margin=float(torch.cat(tally.margins["dense"]).median()),
        populations=populations,
        examples=tally.examples,
    )


def _check_modes(modes: Sequence[str]) -> tuple[str, ...]:
    """The modes asked for, once each in their order; refused unless each is one of ``MODES``."""
    modes = tuple(dict.fromkeys(modes))
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"modes {list(modes)} are not valid; choose from {', '.join(MODES)}")
    return modes


def _check_parts(parts: Mapping[str, Sequence[str]] | None, names: list[str], layers: int) -> dict[str, list[str]]:
    """The parts put back (default: ``default_parts``); refused if one names a population the student
    does not have."""
    parts = default_parts(names, layers) if parts is None else {part: list(members) for part, members in parts.items()}
    unknown = sorted({n for members in parts.values() for n in members} - set(names))
    if unknown:
        raise ValueError(f"parts name populations the student does not have: {unknown}; it has {names}")
    return parts


def _check_dense_student(dense_student, student):
    """The dense student, refused unless it has the spiking student's shape (blocks, widths, heads)."""
    shape = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads")
    if not hasattr(dense_student, "blocks") or any(
        getattr(dense_student.config, k, None) != getattr(student.config, k) for k in shape
    ):
        raise ValueError(
            f"the dense student must have the spiking student's shape ({', '.join(shape)}: "
            f"{[getattr(student.config, k) for k in shape]})"
        )
    return dense_student


@dataclass
class _Tally:
    """What the pass over the data collected: the logits of each network per batch (``pieces``: key ->
    (example indices, logits)), the examples whose class agrees with the dense-equivalent network's at
    each T, the top-2 margins (per T, and 'dense'), and per population and T the sums of the module
    docstring's statistics (``sums``) and of the comparison with a dense student (``dense_sums``)."""

    pieces: dict[tuple, list[tuple[Tensor, Tensor]]]
    agreement: np.ndarray
    margins: dict[Any, list[Tensor]]
    sums: dict[str, np.ndarray]
    dense_sums: dict[str, np.ndarray]
    examples: int = 0

    @classmethod
    def empty(cls, names: Sequence[str], time_steps: list[int]) -> _Tally:
        """Nothing collected yet."""
        return cls(
            pieces={},
            agreement=np.zeros(len(time_steps)),
            margins={t: [] for t in time_steps} | {"dense": []},
            sums={name: np.zeros((len(time_steps), 6)) for name in names},
            dense_sums={name: np.zeros((len(time_steps), 4)) for name in names},
        )

    def keep(self, key: tuple, index: Tensor, values: Tensor) -> None:
        """One batch's logits of the network ``key``, on the CPU."""
        self.pieces.setdefault(key, []).append((index, values.cpu()))


def _attribute_batch(
    student,
    batch: Mapping[str, Tensor],
    index: Tensor,
    tally: _Tally,
    time_steps: list[int],
    modes: Sequence[str],
    parts: Mapping[str, Sequence[str]],
    thresholds: Mapping[str, Tensor],
    dense_student,
) -> None:
    """One batch added to ``tally``: the logits of the dense-equivalent, clipped and spiking networks and
    of each part put back in each mode, at each T; the spiking network's class agreement, margins and
    per-population statistics (against the dense student's activations, given one)."""
    token = batch["attention_mask"][:, :, None].float()
    tally.examples += len(index)
    dense = exact_logits(student, batch, dense=True)
    tally.keep(("dense",), index, dense)
    tally.margins["dense"].append(_margin(dense).cpu())
    tally.keep(("clipped",), index, exact_logits(student, batch, dense=False))
    activations = dense_activations(dense_student, batch) if dense_student is not None else None

    def observe(t: int, rate_map, rates: Mapping[str, Tensor]) -> None:
        _add_statistics(tally.sums, time_steps.index(t), t, rate_map, rates, thresholds, token)
        if activations is not None:
            _add_dense_comparison(tally.dense_sums, time_steps.index(t), t, rate_map, rates, thresholds, token, activations)

    spiking = run_restored(student, batch, time_steps, set(), set(), observe=observe)
    for k, t in enumerate(time_steps):
        tally.keep(("spiking", t), index, spiking[t])
        tally.agreement[k] += float((spiking[t].argmax(-1) == dense.argmax(-1)).sum())
        tally.margins[t].append(_margin(spiking[t]).cpu())
    for part, members in parts.items():
        for mode in modes:
            restored = run_restored(student, batch, time_steps, set(members), set(members) if mode == "dense" else set())
            for t in time_steps:
                tally.keep((part, mode, t), index, restored[t])


def _population_gap(name: str, tally: _Tally, compared: bool) -> PopulationGap:
    """One population's fractions and relative errors at each T from the tally's sums (and, ``compared``
    with a dense student, the fractions of its activations and the distance to them)."""
    s = tally.sums[name]
    count = np.maximum(s[:, 5], 1.0)
    signal = np.maximum(s[:, 4], 1e-12)
    d = tally.dense_sums[name]
    comparison = (
        {}
        if not compared
        else dict(
            dense_clipped_frac=(d[:, 0] / count).tolist(),
            dense_zeroed_frac=(d[:, 1] / count).tolist(),
            distance_to_dense=np.sqrt(d[:, 2] / np.maximum(d[:, 3], 1e-12)).tolist(),
        )
    )
    return PopulationGap(
        name=name,
        clipped_frac=(s[:, 0] / count).tolist(),
        zeroed_frac=(s[:, 1] / count).tolist(),
        clip_error=np.sqrt(s[:, 2] / signal).tolist(),
        spike_error=np.sqrt(s[:, 3] / signal).tolist(),
        **comparison,
    )
