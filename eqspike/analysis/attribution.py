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
0 < |h| below the resolution) and the distance ||theta a_hat(T) - h|| / ||h||.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from eqspike.analysis.diagnostics import _subset_metrics, check_time_steps
from eqspike.core.neurons import time_step_rate
from eqspike.core.simulation import simulate
from eqspike.data.batches import EncodedSplit, sequential_batches
from eqspike.data.tasks import TaskData
from eqspike.runtime.progress import progress

_NO_THRESHOLD = 1e4  # a threshold so large that nothing is clipped: the dense-equivalent population
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


@contextmanager
def _thresholds_removed(student, names: Iterable[str]):
    """The named populations' thresholds set to _NO_THRESHOLD for the rate maps built inside (a map
    reads its thresholds when it is built), restored on exit."""
    saved = {name: student.threshold(name).detach().clone() for name in names}
    try:
        with torch.no_grad():
            for name in saved:
                student.threshold(name).fill_(_NO_THRESHOLD)
        yield
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                student.threshold(name).copy_(value)


def run_restored(
    student, batch: Mapping[str, Tensor], time_steps: Sequence[int], analog: set[str], dense: set[str], observe=None
) -> dict[int, Tensor]:
    """Logits of the spiking network at each T in ``time_steps`` (one simulation to the largest), with
    the ``analog`` populations at their exact rates and, of those, the ``dense`` ones without a
    threshold. ``observe(t, rate_map, rates)`` is called at each of those T."""
    if not dense <= analog:
        raise ValueError("a population without a threshold cannot spike: dense must be a subset of analog")
    last = f"block{student.config.num_hidden_layers - 1}.output"
    with _thresholds_removed(student, dense):
        rate_map = student.rate_map(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        theta_last = student.thresholds()[last]
    logits: dict[int, Tensor] = {}

    def observer(t: int, rates: Mapping[str, Tensor], _counts) -> None:
        if t in time_steps:
            logits[t] = student.head(theta_last * rates[last]).float()
            if observe is not None:
                observe(t, rate_map, rates)

    simulate(rate_map, max(time_steps), observer=observer, count_spikes=False, analog=frozenset(analog))
    return logits


def exact_logits(student, batch: Mapping[str, Tensor], dense: bool) -> Tensor:
    """Logits at the exact equilibrium: clipped (T = infinity), or with no threshold (``dense``: the
    dense-equivalent network)."""
    names = student.population_names(student.config.num_hidden_layers) if dense else []
    last = names[-1] if dense else f"block{student.config.num_hidden_layers - 1}.output"
    with _thresholds_removed(student, names):
        rate_map = student.rate_map(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        theta_last = student.thresholds()[last]
    rates = student.equilibrium(rate_map, mode="solve").rates
    return student.head(theta_last * rates[last]).float()


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


def dense_activations(dense_student, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A dense student's activations at the places of the spiking student's populations (forward hooks):
    the embeddings, and per block key, value, context (the input of the attention output projection),
    attention_output, intermediate (after GELU: the input of the output projection) and output."""
    found: dict[str, Tensor] = {}
    hooks = [dense_student.embeddings.register_forward_hook(lambda m, i, o: found.__setitem__("embeddings", o))]
    for m, block in enumerate(dense_student.blocks):

        def keep(name: str, output: bool = True):
            return (
                (lambda mod, inputs, out: found.__setitem__(name, out))
                if output
                else (lambda mod, inputs: found.__setitem__(name, inputs[0]))
            )

        hooks += [
            block.key.register_forward_hook(keep(f"block{m}.key")),
            block.value.register_forward_hook(keep(f"block{m}.value")),
            block.attention_output.register_forward_pre_hook(keep(f"block{m}.context", output=False)),
            block.attention_norm.register_forward_hook(keep(f"block{m}.attention_output")),
            block.output.register_forward_pre_hook(keep(f"block{m}.intermediate", output=False)),
            block.output_norm.register_forward_hook(keep(f"block{m}.output")),
        ]
    try:
        dense_student(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    finally:
        for hook in hooks:
            hook.remove()
    return found


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
    modes = tuple(dict.fromkeys(modes))
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"modes {list(modes)} are not valid; choose from {', '.join(MODES)}")
    device = torch.device(device)
    student = student.to(device).eval()
    layers = student.config.num_hidden_layers
    names = student.population_names(layers)
    everything = set(names)
    parts = default_parts(names, layers) if parts is None else {part: list(members) for part, members in parts.items()}
    unknown = sorted({n for members in parts.values() for n in members} - everything)
    if unknown:
        raise ValueError(f"parts name populations the student does not have: {unknown}; it has {names}")
    pieces: dict[tuple, list[tuple[Tensor, Tensor]]] = {}
    agreement = np.zeros(len(time_steps))
    margins: dict[Any, list[Tensor]] = {t: [] for t in time_steps} | {"dense": []}
    sums = {name: np.zeros((len(time_steps), 6)) for name in names}
    dense_sums = {name: np.zeros((len(time_steps), 4)) for name in names}
    if dense_student is not None:
        shape = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads")
        if not hasattr(dense_student, "blocks") or any(
            getattr(dense_student.config, k, None) != getattr(student.config, k) for k in shape
        ):
            raise ValueError(
                f"the dense student must have the spiking student's shape ({', '.join(shape)}: "
                f"{[getattr(student.config, k) for k in shape]})"
            )
        dense_student = dense_student.to(device).eval()
    thresholds = student.thresholds()
    examples = 0
    total = -(-len(split) // batch_size)
    total = min(total, max_batches) if max_batches else total
    for number, batch in enumerate(progress(sequential_batches(split, batch_size), total=total, desc="attribute")):
        if max_batches and number >= max_batches:
            break
        index = batch.pop("index")
        batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        token = batch["attention_mask"][:, :, None].float()
        examples += len(index)

        def keep(key: tuple, values: Tensor) -> None:
            pieces.setdefault(key, []).append((index, values.cpu()))

        dense = exact_logits(student, batch, dense=True)
        keep(("dense",), dense)
        margins["dense"].append(_margin(dense).cpu())
        keep(("clipped",), exact_logits(student, batch, dense=False))
        activations = dense_activations(dense_student, batch) if dense_student is not None else None

        def observe(t: int, rate_map, rates: Mapping[str, Tensor]) -> None:
            _add_statistics(sums, time_steps.index(t), t, rate_map, rates, thresholds, token)
            if activations is not None:
                _add_dense_comparison(dense_sums, time_steps.index(t), t, rate_map, rates, thresholds, token, activations)

        spiking = run_restored(student, batch, time_steps, set(), set(), observe=observe)
        for k, t in enumerate(time_steps):
            keep(("spiking", t), spiking[t])
            agreement[k] += float((spiking[t].argmax(-1) == dense.argmax(-1)).sum())
            margins[t].append(_margin(spiking[t]).cpu())
        for part, members in parts.items():
            for mode in modes:
                restored = run_restored(student, batch, time_steps, set(members), set(members) if mode == "dense" else set())
                for t in time_steps:
                    keep((part, mode, t), restored[t])

    def score(key: tuple) -> float:
        return _subset_metrics(task, split, pieces[key])[task.metric]

    spiking_score = [score(("spiking", t)) for t in time_steps]
    recovered = {
        part: {mode: [score((part, mode, t)) - spiking_score[k] for k, t in enumerate(time_steps)] for mode in modes}
        for part in parts
    }
    populations = []
    for name in names:
        s = sums[name]
        count = np.maximum(s[:, 5], 1.0)
        signal = np.maximum(s[:, 4], 1e-12)
        d = dense_sums[name]
        compared = (
            {}
            if dense_student is None
            else dict(
                dense_clipped_frac=(d[:, 0] / count).tolist(),
                dense_zeroed_frac=(d[:, 1] / count).tolist(),
                distance_to_dense=np.sqrt(d[:, 2] / np.maximum(d[:, 3], 1e-12)).tolist(),
            )
        )
        populations.append(
            PopulationGap(
                name=name,
                clipped_frac=(s[:, 0] / count).tolist(),
                zeroed_frac=(s[:, 1] / count).tolist(),
                clip_error=np.sqrt(s[:, 2] / signal).tolist(),
                spike_error=np.sqrt(s[:, 3] / signal).tolist(),
                **compared,
            )
        )
    return Attribution(
        metric=task.metric,
        num_labels=student.config.num_labels,
        time_steps=time_steps,
        dense_equivalent_score=score(("dense",)),
        clipped_score=score(("clipped",)),
        spiking_score=spiking_score,
        recovered=recovered,
        agreement_with_dense_equivalent=None if task.is_regression else (agreement / max(examples, 1)).tolist(),
        median_margin=[float(torch.cat(margins[t]).median()) for t in time_steps],
        dense_equivalent_median_margin=float(torch.cat(margins["dense"]).median()),
        populations=populations,
        examples=examples,
    )


# ----------------------------------------------------------------------------- report
def format_attribution(a: Attribution) -> str:
    """The attribution as text tables (also the body of attribution.md)."""
    ts = a.time_steps
    lines = [
        f"{a.metric} on {a.examples} examples, {a.num_labels} labels: dense-equivalent (the trained weights, no "
        f"threshold) {a.dense_equivalent_score:.4f}; clipped (T = inf) {a.clipped_score:.4f}"
        + "".join(f"; {name} {value:.4f}" for name, value in a.reference.items()),
        "",
    ]
    header = "| | " + " | ".join(f"T = {t}" for t in ts) + " |"
    rule = "|---|" + "---:|" * len(ts)
    lines += [
        header,
        rule,
        "| spiking at T (simulated) | " + " | ".join(f"{s:.4f}" for s in a.spiking_score) + " |",
        "| gap to the dense-equivalent | " + " | ".join(f"{a.dense_equivalent_score - s:+.4f}" for s in a.spiking_score) + " |",
        "| class agrees with the dense-equivalent | "
        + " | ".join(
            [f"{v:.3f}" for v in a.agreement_with_dense_equivalent]
            if a.agreement_with_dense_equivalent is not None
            else ["-"] * len(ts)
        )
        + " |",
        f"| median top-2 logit margin (dense-equivalent {a.dense_equivalent_median_margin:.2f}) | "
        + " | ".join(f"{v:.2f}" for v in a.median_margin)
        + " |",
        "",
    ]
    modes = sorted({mode for by_mode in a.recovered.values() for mode in by_mode})
    lines += [
        "Points recovered when one part is put back, its rate exact at every step (the rest spiking): "
        + "; ".join(
            f"{mode} = " + ("clamp(F, lo theta, theta), exact" if mode == "clipped" else "F, no threshold") for mode in modes
        ),
        "",
        "| part | " + " | ".join(f"{mode} T = {t}" for mode in modes for t in ts) + " |",
        "|---|" + "---:|" * (len(ts) * len(modes)),
    ]
    for part, by_mode in a.recovered.items():
        lines.append(
            f"| {part.removeprefix('kind:')} | " + " | ".join(f"{100 * v:+.1f}" for mode in modes for v in by_mode[mode]) + " |"
        )
    lines += [
        "",
        "(points: 100 x the metric)",
        "",
        "Per population of the spiking network at T (x = F / theta, its current from the upstream rates at T): "
        "fraction clipped | zeroed below 1/T | relative error of clipping | of spiking",
        "",
    ]
    lines += _population_table(a, "clip / zero / e_clip / e_spike", ("clipped_frac", "zeroed_frac", "clip_error", "spike_error"))
    if a.populations and a.populations[0].distance_to_dense is not None:
        lines += [
            "",
            "The dense student's activations h at the same places, on the same inputs: fraction above the "
            "population's threshold | below its resolution at T | distance ||theta a_hat(T) - h|| / ||h||",
            "",
        ]
        lines += _population_table(
            a, "above / below / distance", ("dense_clipped_frac", "dense_zeroed_frac", "distance_to_dense")
        )
    return "\n".join(lines)


def _population_table(a: Attribution, header: str, fields: Sequence[str]) -> list[str]:
    """One row per population, one column per T holding ``fields`` of PopulationGap joined by ' / '."""
    ts = a.time_steps
    lines = ["| population | " + " | ".join(f"T = {t}: {header}" for t in ts) + " |", "|---|" + "---:|" * len(ts)]
    for p in a.populations:
        lines.append(
            f"| {p.name} | " + " | ".join(" / ".join(f"{getattr(p, f)[k]:.3f}" for f in fields) for k in range(len(ts))) + " |"
        )
    return lines


def write_attribution(a: Attribution, out_dir: str | Path) -> list[Path]:
    """attribution.json, attribution.md and attribution.png (points recovered per part and T)."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "attribution.json", out / "attribution.md", out / "attribution.png"]
    paths[0].write_text(json.dumps(a.to_dict(), indent=2) + "\n")
    paths[1].write_text("# Where the points go\n\n" + format_attribution(a) + "\n")
    parts = list(a.recovered)
    modes = sorted({mode for by_mode in a.recovered.values() for mode in by_mode})
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 0.35 * len(parts) + 2), squeeze=False, sharey=True)
    height = 0.8 / len(a.time_steps)
    for ax, mode in zip(axes[0], modes):
        for k, t in enumerate(a.time_steps):
            ax.barh(np.arange(len(parts)) + k * height, [100 * a.recovered[p][mode][k] for p in parts], height, label=f"T = {t}")
        ax.set_yticks(np.arange(len(parts)) + 0.4 - height / 2, [p.removeprefix("kind:") for p in parts])
        ax.invert_yaxis()
        ax.axvline(0, color="black", linewidth=0.5)
        ax.set_xlabel(f"points recovered ({a.metric} x 100), part put back {mode}")
    axes[0][0].legend()
    fig.suptitle(
        "gap to the dense-equivalent: "
        + ", ".join(f"T={t} {100 * (a.dense_equivalent_score - s):+.1f}" for t, s in zip(a.time_steps, a.spiking_score))
    )
    fig.tight_layout()
    fig.savefig(paths[2], dpi=100)
    plt.close(fig)
    return paths
