"""The attribution (``eqspike.analysis.attribution``) as text tables and files: attribution.json,
attribution.md and attribution.png (points recovered per part and T)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from eqspike.analysis.attribution import Attribution


def format_attribution(a: Attribution) -> str:
    """The attribution as text tables (also the body of attribution.md)."""
    lines = _score_lines(a) + _recovered_lines(a)
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


def _score_lines(a: Attribution) -> list[str]:
    """The scores of the dense-equivalent and clipped networks (and the references), then per T the
    spiking network's score, its gap to the dense-equivalent one, the class agreement and the median
    top-2 logit margin."""
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
    return lines


def _recovered_lines(a: Attribution) -> list[str]:
    """The points each part recovers when put back, per mode and T (100 x the metric)."""
    ts = a.time_steps
    modes = sorted({mode for by_mode in a.recovered.values() for mode in by_mode})
    lines = [
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
    return lines


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
