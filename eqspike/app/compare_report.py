"""What `eqspike compare` writes: compare.md (a table per method and T), compare.png (score, memory,
time and energy by T), pareto.png (accuracy against energy, with the baselines) and, over seeds,
compare_seeds.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eqspike.analysis.diagnostics import check_time_steps
from eqspike.analysis.seeds import format_spread, paired_differences, spread

METHODS = ("eqspike", "eqspike-inf", "spikelm", "dense", "dense-int8", "qnn", "teacher-int8")
METHOD_LABELS = {
    "eqspike": "eqspike, trained for T",
    "eqspike-inf": "eqspike, trained for T = inf",
    "spikelm": "SpikeLM (BPTT at T)",
    "dense": "dense student (no spikes)",
    "dense-int8": "dense student, INT8 (W8A8)",
    "qnn": "QNN: the T-step quantized map",
    "teacher-int8": "teacher, INT8 (W8A8)",
}
METHOD_COLOURS = {
    "eqspike": "tab:blue",
    "eqspike-inf": "tab:cyan",
    "spikelm": "tab:orange",
    "dense": "tab:gray",
    "dense-int8": "black",
    "qnn": "tab:purple",
    "teacher-int8": "tab:brown",
}


def write_compare(result: dict[str, Any], out_dir: Path, log=print) -> None:
    """compare.json, compare.md, compare.png and pareto.png in ``out_dir``."""
    (out_dir / "compare.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "compare.md").write_text(markdown_table(result) + "\n")
    plot_bars(result, out_dir / "compare.png")
    plot_pareto(result, out_dir / "pareto.png")
    log(markdown_table(result))
    log(f"wrote {out_dir / 'compare.json'}, {out_dir / 'compare.md'}, {out_dir / 'compare.png'}, {out_dir / 'pareto.png'}")


def seeds_table(summary: dict[str, Any]) -> str:
    """Mean +- std [95% interval] over seeds of each method's score and energy, and of the paired differences."""

    def cell(s: dict[str, Any] | None, digits: int = 4) -> str:
        return "-" if s is None else format_spread(s, digits)

    lines = [
        f"{summary['task']}: dev {summary['metric']} over seeds {', '.join(map(str, summary['seeds']))} "
        f"(mean +- std [95% interval]); differences are paired by seed. Teacher: {cell(summary['teacher_score'])}",
        "",
        "| method | T | score | energy / teacher | score - eqspike's | score - SpikeLM's | energy - SpikeLM's "
        "| score - the dense student's | score - the QNN's |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary["rows"]:
        lines.append(
            f"| {r['method']} | {r['time_steps']} | {cell(r['score'])} | {cell(r['energy_ratio'], 3)} | "
            f"{cell(r.get('score_minus_eqspike'))} | {cell(r.get('score_minus_spikelm'))} | "
            f"{cell(r.get('energy_ratio_minus_spikelm'), 3)} | "
            f"{cell(r.get('score_minus_dense'))} | {cell(r.get('score_minus_qnn'))} |"
        )
    return "\n".join(lines)


def markdown_table(result: dict[str, Any]) -> str:
    memory = result.get("teacher_energy_pj_compute_memory")
    lines = [
        f"| method | T | dev {result['metric']} | train step (s) | peak train memory (MiB) | firing rate | energy / example (uJ) | energy / teacher | with memory traffic / teacher's |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(result["rows"], key=lambda r: (r["time_steps"], r["method"])):
        if r["score"] is None:
            lines.append(f"| {r['method']} | {r['time_steps']} | diverged in training | | | | | | |")
            continue
        strict = r.get("energy_pj_compute_memory")
        step = "-" if r["train_step_s"] is None else f"{r['train_step_s']:.3f}"  # a network not trained here
        memory_mb = "-" if r["peak_train_mem_mb"] is None else f"{r['peak_train_mem_mb']:.1f}"
        lines.append(
            f"| {r['method']} | {r['time_steps']} | {r['score']:.4f} | {step} | "
            f"{memory_mb} | {r['firing_rate']:.3f} | {r['energy_pj'] / 1e6:.1f} | "
            f"{r['energy_pj'] / result['teacher_energy_pj']:.3f} | "
            f"{'-' if strict is None or not memory else f'{strict / memory:.3f}'} |"
        )
    lines.append(
        f"| teacher ({result['teacher']}) | - | {result['teacher_score']:.4f} | | | | "
        f"{result['teacher_energy_pj'] / 1e6:.1f} | 1 | 1 |"
    )
    budgets = result.get("eqspike_budgets_at_spikelm_energy")
    if budgets:
        lines.append("")
        lines.append(
            "eqspike trained for T under an energy budget equal to SpikeLM's energy at T: "
            + ", ".join(f"T = {T}: {budget:.3f}" for T, budget in budgets.items())
        )
    return "\n".join(lines)


def plot_bars(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    steps = sorted({r["time_steps"] for r in result["rows"]})
    panels = [
        ("score", f"dev {result['metric']}"),
        ("peak_train_mem_mb", "peak train memory (MiB)"),
        ("train_step_s", "train step (s)"),
        ("energy_pj", "energy / example (pJ)"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6))
    x = np.arange(len(steps))
    for ax, (key, label) in zip(axes, panels):
        present = [m for m in METHODS if any(r["method"] == m for r in result["rows"])]
        width = 0.8 / len(present)
        for number, method in enumerate(present):
            values = {
                r["time_steps"]: np.nan if r[key] is None else r[key]
                for r in result["rows"]
                if r["method"] == method and r["score"] is not None
            }
            ax.bar(
                x - 0.4 + width * (number + 0.5),
                [values.get(t, np.nan) for t in steps],
                width=width,
                label=METHOD_LABELS[method],
                color=METHOD_COLOURS[method],
            )
        if key == "score":
            ax.axhline(result["teacher_score"], color="tab:red", ls="--", lw=1, label="teacher")
        ax.set_xticks(x, [f"T={t}" for t in steps])
        ax.set_title(label, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pareto(result: dict[str, Any], path: Path) -> None:
    """Accuracy against energy per example (relative to the teacher): each method at each T, and the teacher."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for method in ("eqspike", "eqspike-inf", "spikelm", "qnn"):
        rows = sorted(
            (r for r in result["rows"] if r["method"] == method and r["score"] is not None), key=lambda r: r["time_steps"]
        )
        if not rows:
            continue
        x = [r["energy_pj"] / result["teacher_energy_pj"] for r in rows]
        y = [r["score"] for r in rows]
        label = METHOD_LABELS[method]
        if method == "eqspike" and result.get("eqspike_budgets_at_spikelm_energy"):
            label += ", budget = SpikeLM's energy"
        ax.plot(x, y, marker="o", color=METHOD_COLOURS[method], label=label)
        for xi, yi, r in zip(x, y, rows):
            ax.annotate(
                f"T={r['time_steps']}",
                (xi, yi),
                textcoords="offset points",
                xytext=(4, -10),
                fontsize=7,
                color=METHOD_COLOURS[method],
            )
    for method in ("dense", "dense-int8", "teacher-int8"):  # one network whatever T
        dense = next((r for r in result["rows"] if r["method"] == method and r["score"] is not None), None)
        if dense is not None:
            ax.plot(
                [dense["energy_pj"] / result["teacher_energy_pj"]],
                [dense["score"]],
                marker="D",
                ms=8,
                color=METHOD_COLOURS[method],
                ls="none",
                label=METHOD_LABELS[method],
            )
    ax.plot([1.0], [result["teacher_score"]], marker="*", ms=12, color="tab:red", ls="none", label="teacher (dense)")
    ax.set_xscale("log")
    ax.set_xlabel("energy per example / teacher's (log)")
    ax.set_ylabel(f"dev {result['metric']}")
    ax.set_title(f"{result['task']}: accuracy against energy")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")  # wherever it hides no point
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


REFERENCES = ("eqspike", "spikelm", "dense", "qnn")  # over seeds, each method's paired differences to these


def summarize_seeds(results: dict[int, dict[str, Any]], time_steps: list[int]) -> dict[str, Any]:
    """Per T and method, over the seeds of ``results`` (seed -> a ``compare`` result): the dev score and
    the energy ratio (mean, std, 95% interval), and their paired differences to each of ``REFERENCES``
    on the same seed (the same data order, selection split and teacher)."""
    seeds = list(results)

    def value(result: dict[str, Any], method: str, T: int, key: str) -> float | None:
        row = next((r for r in result["rows"] if r["method"] == method and r["time_steps"] == T), None)
        if row is None or row["score"] is None:
            return None
        return row["score"] if key == "score" else row["energy_pj"] / result["teacher_energy_pj"]

    rows = []
    trained = {r["method"] for result in results.values() for r in result["rows"]}
    for T in check_time_steps(time_steps):
        for method in (m for m in METHODS if m in trained):
            entry: dict[str, Any] = {"method": method, "time_steps": T}
            for key in ("score", "energy_ratio"):
                per_seed = {s: v for s in seeds if (v := value(results[s], method, T, key)) is not None}
                entry[key] = spread(list(per_seed.values())) if per_seed else None
                for reference in REFERENCES:
                    if method == reference:
                        continue
                    theirs = {s: v for s in seeds if (v := value(results[s], reference, T, key)) is not None}
                    entry[f"{key}_minus_{reference}"] = (
                        paired_differences(per_seed, theirs) if set(per_seed) & set(theirs) else None
                    )
            rows.append(entry)
    return {
        "task": results[seeds[0]]["task"],
        "metric": results[seeds[0]]["metric"],
        "seeds": seeds,
        "teacher_score": spread([results[s]["teacher_score"] for s in seeds]),
        "rows": rows,
        "environment": {str(s): results[s].get("environment") for s in seeds},
    }
