"""The diagnostics as a table on the terminal, PNG plots and a JSON file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from eqspike.analysis.diagnostics import Diagnostics


# ----------------------------------------------------------------------------- reporting
def population_kind(name: str) -> str:
    """What feeds the population: the operation in front of its neurons."""
    part = name.split(".")[-1]
    return {
        "embeddings": "embedding (LayerNorm)",
        "key": "affine",
        "value": "affine",
        "context": "softmax attention",
        "attention_output": "LayerNorm",
        "intermediate": "GELU",
        "output": "LayerNorm",
    }[part]


def format_table(d: Diagnostics) -> str:
    shown = [t for t in d.time_steps if t in (8, 16, 32, 64, 128)] or d.time_steps
    cols = [d.time_steps.index(t) for t in shown]
    width = max(len(p.name) for p in d.populations)
    head = f"{'population':<{width}}  {'fed by':<21}" + "".join(f"{'err T=' + str(t):>11}" for t in shown)
    head += f"{'firing':>8}{'silent':>8}{'satur.':>8}"
    lines = [head, "-" * len(head)]
    for p in d.populations:
        lines.append(
            f"{p.name:<{width}}  {population_kind(p.name):<21}"
            + "".join(f"{p.rate_error[k]:>11.4f}" for k in cols)
            + f"{p.firing_rate:>8.3f}{p.silent_frac:>8.3f}{p.saturated_frac:>8.3f}"
        )
    lines.append(f"{'mean':<{width}}  {'':<21}" + "".join(f"{d.mean_rate_error[k]:>11.4f}" for k in cols))
    lines.append("")
    small = [t for t in d.time_steps if t <= 8][-3:] or d.time_steps[:1]
    head = f"{'population':<{width}}" + "".join(f"{f'T={t}: firing silent satur. lag  mismatch':>43}" for t in small)
    lines += [head, "-" * len(head)]
    for p in d.populations:
        lines.append(
            f"{p.name:<{width}}"
            + "".join(
                f"{'':>5}{p.firing_vs_T[k]:>7.3f}{p.silent_vs_T[k]:>7.3f}{p.saturated_vs_T[k]:>7.3f}{p.lag_vs_T[k]:>6.3f}"
                f"{p.mismatch_vs_T[k]:>9.3f}    "
                for k in (d.time_steps.index(t) for t in small)
            )
        )
    lines.append(
        "(lag: neurons whose count after T steps is not round(T x) of their own final current, because they "
        "could not keep up; mismatch: neurons whose rate differs from the whole T-step quantized map's, a "
        "lag upstream included)"
    )
    lines.append(
        f"{d.metric} of the T-step quantized map: "
        + ", ".join(f"T={t} {q:.4f}" for t, q in zip(d.time_steps, d.quantized_score_vs_T))
    )
    lines.append("")
    lines.append(
        f"{d.metric} vs T: "
        + ", ".join(f"T={t} {s:.4f}" for t, s in zip(d.time_steps, d.score_vs_T))
        + f" | equilibrium (solve) {d.solve_score:.4f}"
        + (f" | teacher {d.teacher_score:.4f}" if d.teacher_score is not None else "")
    )
    lines.append(
        f"equilibrium residual {d.residual:.2e}, solver iterations {d.solver_iterations}, spectral radius "
        + (f"{d.spectral_radius:.3f}" if d.spectral_radius is not None else "n/a (no feedback)")
    )
    e = d.energy
    lines.append(
        f"energy per example at T={e['time_steps']}: {e['accumulates']:.3e} AC + {e['macs']:.3e} MAC = "
        f"{e['snn_pj'] / 1e6:.2f} uJ; teacher ({e['teacher_layers']} layers) {e['ann_macs']:.3e} MAC = "
        f"{e['ann_pj'] / 1e6:.2f} uJ; SNN/ANN = {e['ratio']:.3f}"
    )
    return "\n".join(lines)


# The colour of a population in the plots, by what feeds it (``population_kind``).
KIND_COLOURS = {
    "embedding (LayerNorm)": "tab:gray",
    "affine": "tab:blue",
    "softmax attention": "tab:purple",
    "LayerNorm": "tab:green",
    "GELU": "tab:orange",
}


def plot(d: Diagnostics, out_dir: str | Path) -> list[Path]:
    """rate_error.png (log-log with a 1/T guide), score_vs_T.png, firing_rate.png."""
    import matplotlib

    matplotlib.use("Agg")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        _plot_rate_error(d, out_dir / "rate_error.png"),
        _plot_score(d, out_dir / "score_vs_T.png"),
        _plot_firing_rate(d, out_dir / "firing_rate.png"),
    ]


def _plot_rate_error(d: Diagnostics, path: Path) -> Path:
    """Mean |a_hat(T) - a*| against T, log-log, per population (coloured by what feeds it) and over all
    of them, with a 1/T guide through the largest T."""
    import matplotlib.pyplot as plt

    T = np.array(d.time_steps, dtype=float)
    fig, ax = plt.subplots(figsize=(7, 5))
    seen = set()
    for p in d.populations:
        kind = population_kind(p.name)
        ax.loglog(
            T,
            np.maximum(p.rate_error, 1e-12),
            color=KIND_COLOURS[kind],
            alpha=0.45,
            lw=1,
            label=None if kind in seen else f"{kind}-fed",
        )
        seen.add(kind)
    ax.loglog(T, d.mean_rate_error, color="black", lw=2.5, marker="o", label="mean over populations")
    anchor = d.mean_rate_error[-1] * T[-1]  # through the largest T: the asymptote
    ax.loglog(T, anchor / T, "k--", lw=1, label="1/T guide")
    ax.set_xlabel("time steps T")
    ax.set_ylabel(r"mean $|\hat a(T) - a^*|$")
    ax.set_title("Spike rates converge to the equilibrium")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_score(d: Diagnostics, path: Path) -> Path:
    """The metric of the spiking student against T, beside its score at the equilibrium and the teacher's."""
    import matplotlib.pyplot as plt

    T = np.array(d.time_steps, dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.semilogx(T, d.score_vs_T, marker="o", label="spiking student (simulate)", base=2)
    ax.axhline(d.solve_score, color="tab:green", ls=":", label="student at equilibrium (solve)")
    if d.teacher_score is not None:
        ax.axhline(d.teacher_score, color="tab:red", ls="--", label="teacher")
    ax.set_xlabel("time steps T")
    ax.set_ylabel(d.metric)
    ax.set_title(f"{d.metric} vs T")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_firing_rate(d: Diagnostics, path: Path) -> Path:
    """Per population at the largest T: spikes per neuron per step, and the silent and saturated fractions."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(7, 0.45 * len(d.populations)), 4.5))
    x = np.arange(len(d.populations))
    ax.bar(x, [p.firing_rate for p in d.populations], color=[KIND_COLOURS[population_kind(p.name)] for p in d.populations])
    ax.plot(x, [p.silent_frac for p in d.populations], "kv", ms=4, label="silent fraction")
    ax.plot(x, [p.saturated_frac for p in d.populations], "r^", ms=4, label="saturated fraction")
    ax.set_xticks(x, [p.name for p in d.populations], rotation=75, fontsize=7)
    ax.set_ylabel(f"spikes per neuron per step (T={d.time_steps[-1]})")
    ax.set_title("Firing rate per population")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(d: Diagnostics, out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "diagnostics.json"
    path.write_text(
        json.dumps(d.to_dict(), indent=2, default=lambda x: None if isinstance(x, float) and math.isnan(x) else x) + "\n"
    )
    return path
