"""The files of `eqspike energy RUN` (``eqspike.analysis.energy_report``): energy.json, report.md (per T
and convention, the student's energy against each baseline's, the ratios and break-even firing rates,
then its inventory) and energy.png."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eqspike.analysis.energy import CONVENTIONS
from eqspike.analysis.energy_report import BASELINES
from eqspike.runtime.files import write_atomic


def format_report(report: dict[str, Any]) -> str:
    """report.md: per T and convention, the student's energy and each baseline's, the ratio and the
    break-even firing rate; then the student's inventory at its own T."""
    s = report["student"]
    lines = [
        f"# Energy per example ({report['examples']} dev examples, {report['mean_length']:.1f} tokens on average)",
        "",
        f"Student: {s['layers']} x {s['hidden']} (teacher: {s['teacher_layers']} layers), {s['weight_bits']}-bit "
        f"weights, {s['membrane']} membrane, trained for T = {s['trained_for']}. Hardware: {report['hardware']['name']} "
        f"({report['hardware']['source']}); memory {report['hardware']['memory_kb']:g} KB banks, "
        f"{report['hardware']['pj_per_bit']:.4f} pJ per bit; synaptic weights read {report['access'].replace('_', ' ')}.",
        "",
    ]
    for convention, meaning in report["conventions"].items():
        lines += _convention_lines(report, convention, meaning)
    lines += _inventory_lines(report)
    return "\n".join(lines) + "\n"


def _convention_lines(report: dict[str, Any], convention: str, meaning: str) -> list[str]:
    """One convention's section: per T the score, firing rate, the student's energy and its ratio to each
    baseline; the baselines' energies; per T the break-even firing rate against each baseline."""
    lines = [
        f"## `{convention}`: {meaning}",
        "",
        "| T | " + report["metric"] + " | firing rate | student (uJ) | " + " | ".join(f"/ {b}" for b in BASELINES) + " |",
        "|---:|---:|---:|---:|" + "---:|" * len(BASELINES),
    ]
    for row in report["rows"]:
        c = row["conventions"][convention]
        lines.append(
            f"| {row['time_steps']} | {row['score']:.4f} | {row['firing_rate']:.4f} | {c['student_uj']:.2f} | "
            + " | ".join(f"{c['ratio'][b]:.3f}" for b in BASELINES)
            + " |"
        )
    lines += [
        "",
        "Baselines (uJ): "
        + ", ".join(f"{b} {report['rows'][0]['conventions'][convention]['baselines_uj'][b]:.2f}" for b in BASELINES if b != "qnn")
        + "; qnn "
        + ", ".join(
            f"{r['conventions'][convention]['baselines_uj']['qnn']:.2f} at T = {r['time_steps']} ({r['qnn_activation_bits']}-bit)"
            for r in report["rows"]
        )
        + ".",
        "",
        "Break-even firing rate (the student's spikes per neuron and step at which it would cost what the "
        "baseline costs; 'never': it costs more even silent):",
        "",
        "| T | firing rate | " + " | ".join(BASELINES) + " |",
        "|---:|---:|" + "---:|" * len(BASELINES),
    ]
    for row in report["rows"]:
        rates = row["conventions"][convention]["break_even_firing_rate"]
        lines.append(
            f"| {row['time_steps']} | {row['firing_rate']:.4f} | "
            + " | ".join("never" if rates[b] is None else f"{rates[b]:.4f}" for b in BASELINES)
            + " |"
        )
    lines.append("")
    return lines


def _inventory_lines(report: dict[str, Any]) -> list[str]:
    """The student's inventory at the T it was trained for (else the largest T): per op its part, kind,
    format, count, energy and the conventions that count it."""
    s = report["student"]
    at = next((r for r in report["rows"] if r["time_steps"] == s["trained_for"]), report["rows"][-1])
    lines = [
        f"## Inventory at T = {at['time_steps']}",
        "",
        "| part | kind | format | count | uJ | counted in |",
        "|---|---|---|---:|---:|---|",
    ]
    for op in at["inventory"]:
        lines.append(
            f"| {op['part']} | {op['kind']} | {op['format'] or 'bits'} | {op['count']:.4g} | {op['uj']:.3f} | "
            f"{'both' if op['convention'] == 'compute' else 'compute_memory'} |"
        )
    return lines


def plot_report(report: dict[str, Any], path: Path) -> Path:
    """energy.png: per convention, the student's energy against its firing rate at each T (a line: its
    spikes scaled at their measured mix; a dot: as measured), the baselines as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CONVENTIONS), figsize=(6 * len(CONVENTIONS), 4.5))
    for ax, convention in zip(axes, CONVENTIONS):
        for row in report["rows"]:
            counted = [i for i in row["inventory"] if convention == "compute_memory" or i["convention"] == "compute"]
            fixed = sum(i["uj"] for i in counted if not i["per_spike"])
            per_rate = sum(i["uj"] for i in counted if i["per_spike"]) / max(row["firing_rate"], 1e-12)
            rates = [0.0, max(0.5, 2 * row["firing_rate"])]
            ax.plot(rates, [fixed + per_rate * r for r in rates], label=f"student, T = {row['time_steps']}")
            ax.scatter([row["firing_rate"]], [row["conventions"][convention]["student_uj"]])
        for name in BASELINES[:-1]:
            value = report["rows"][0]["conventions"][convention]["baselines_uj"][name]
            ax.axhline(value, linestyle="--", linewidth=0.8, color="grey")
            ax.annotate(name, (0, value), fontsize=7, va="bottom")
        ax.set_title(convention)
        ax.set_xlabel("firing rate (spikes per neuron and step)")
        ax.set_ylabel("energy per example (uJ)")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_energy_report(report: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """energy.json, report.md and energy.png in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "energy.json", json.dumps(report, indent=2) + "\n")
    write_atomic(out / "report.md", format_report(report))
    return [out / "energy.json", out / "report.md", plot_report(report, out / "energy.png")]
