"""The spread over seeds of a recipe, and of its variants, paired by seed.

    python benchmarks/bench_spread.py --config configs/quickstart.yaml --seeds 42 43 44 \\
        --variant ema:ema_decay=0.95 --out runs/spread --results benchmarks/results/bench_spread_cpu.json

Each variant (``NAME`` or ``NAME:key=value,key=value``, the keys RunConfig's; ``baseline``, the
configuration as it is, with ``--set``'s changes, always comes first) is distilled once per seed with ``eqspike distill --seeds``
into ``OUT/NAME/seed-S``; finished runs with the same settings are reused, so a variant can be added
later. The same seed gives every variant the same teacher, data order and selection split, so the
per-seed differences to the baseline are paired (``eqspike.analysis.seeds.paired_differences``), and so
is the test of a narrower spread (``spread_ratio``: the F-test, and the Pitman-Morgan test for pairs).

Prints, per variant: the spread (mean, std, min, max, 95% interval) of the spiking student's dev
score, its ratio to the teacher and its energy ratio, and the paired difference to the baseline; the
stability within a run (the standard deviation of the selection-split score over the later half of the
run's evaluations, averaged over seeds: how much the student kept depends on which evaluation wins);
then where the spread comes from, per dev example (``eqspike.analysis.seeds.example_flips``: the
fraction of examples on which two seeds' students differ, right against wrong, and the standard
deviation those flips alone would give), and each variant's flip rate minus the baseline's, with its
interval over the examples; then the per-seed scores. The per-example predictions come from
``eqspike evaluate RUN --time-steps T --predictions`` (run once per run, kept in RUN/predictions/).
Writes the same as JSON to ``--results``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from eqspike.analysis.seeds import (
    SUMMARY_KEYS,
    example_flips,
    flip_difference,
    format_spread,
    paired_differences,
    spread,
    spread_ratio,
)
from eqspike.app.cli import main as eqspike
from eqspike.distill.config import FIELDS, RunConfig
from eqspike.distill.run_directory import RunDirectory
from eqspike.distill.seeds import distill_seeds
from eqspike.distill.yaml_io import load_yaml


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """'ema:ema_decay=0.95,evals_per_epoch=4' -> ('ema', {'ema_decay': 0.95, 'evals_per_epoch': 4}). An item
    whose key is not a setting continues the value before it: 'b:spike_levels=intermediate=2,output=2'
    -> {'spike_levels': 'intermediate=2,output=2'}."""
    name, _, settings = text.partition(":")
    raw: dict[str, str] = {}
    last = None
    for item in filter(None, settings.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--variant {text!r}: {item!r} is not key=value")
        if key.strip() in FIELDS or last is None:
            last = key.strip()
            raw[last] = value
        else:
            raw[last] += "," + item
    return name, {key: yaml.safe_load(value) for key, value in raw.items()}


def late_evaluation_std(run: Path, metric: str) -> float | None:
    """The standard deviation of the selection-split ``metric`` over the later half of a run's evaluations."""
    scores = [r["eval"][metric] for r in RunDirectory(run).log_records() if "eval" in r and metric in r["eval"]]
    late = scores[len(scores) // 2 :]
    return spread(late)["std"] if len(late) > 1 else None


def correct_at(run: Path, time_steps: int, score: float) -> list[bool]:
    """Whether the run's student gets each example of the main dev split right at T (``eqspike evaluate
    --predictions``, once); checked against the score distill reported."""
    path = run / "predictions" / f"T{time_steps}.csv"
    if not path.is_file():
        if eqspike(["evaluate", str(run), "--time-steps", str(time_steps), "--predictions"]) != 0:
            raise SystemExit(f"eqspike evaluate {run} failed")
    rows = list(csv.DictReader(path.open()))
    main_split = rows[0]["split"]
    correct = [r["correct"] == "1" for r in rows if r["split"] == main_split]
    if abs(sum(correct) / len(correct) - score) > 1e-9:
        raise SystemExit(f"{path}: accuracy {sum(correct) / len(correct):.4f}, but {run} reported {score:.4f}")
    return correct


def _ratio(r: dict[str, Any] | None) -> str:
    """'0.34 (p 0.04, 0.10)': s_variant / s_baseline with the F-test's and the paired test's p."""
    if not r or r["std_ratio"] is None:
        return "-"
    p = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    return f"{r['std_ratio']:.2f} (p {p(r['f_test_p'])}, {p(r['pitman_morgan_p'])})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the YAML settings of the baseline")
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    p.add_argument("--variant", action="append", default=[], help="NAME:key=value,... (repeatable)")
    p.add_argument(
        "--set",
        default="",
        metavar="KEY=VALUE,...",
        help="settings over the config for the baseline and every variant, e.g. one fixed teacher and data "
        "draw so that the seed changes only the student: teacher=teachers/<stored>,data_seed=42",
    )
    p.add_argument("--out", type=Path, default=Path("runs/spread"), help="run directories: OUT/NAME/seed-S")
    p.add_argument("--results", type=Path, required=True, help="the JSON file written")
    args = p.parse_args(argv)

    fixed = parse_variant(f"set:{args.set}")[1]
    base = {**load_yaml(args.config), **fixed}
    variants = [("baseline", {})] + [parse_variant(v) for v in args.variant]
    summaries = {}
    for name, changes in variants:
        config = RunConfig(**{**base, **changes, "output_dir": str(args.out / name), "resume": True})
        print(f"== {name} {changes or ''}", flush=True)
        summaries[name] = distill_seeds(
            config, args.seeds, log=lambda m: print(m, flush=True), command=" ".join(["bench_spread.py", *(argv or sys.argv[1:])])
        )

    rows, flips = [], {}
    baseline = summaries["baseline"]["metrics"]
    for name, changes in variants:
        metrics = summaries[name]["metrics"]
        row = {"variant": name, "changes": changes, "seeds": args.seeds, **{key: metrics[key] for key in SUMMARY_KEYS}}
        stds = [late_evaluation_std(args.out / name / f"seed-{seed}", summaries[name]["metric"]) for seed in args.seeds]
        row["late_evaluation_std"] = spread(stds) if None not in stds else None
        if name != "baseline":
            for key in ("student_score", "student_energy_ratio"):
                a = dict(zip(args.seeds, metrics[key]["values"]))
                b = dict(zip(args.seeds, baseline[key]["values"]))
                row[f"{key}_minus_baseline"] = paired_differences(a, b)
            row["student_score_spread_vs_baseline"] = spread_ratio(
                dict(zip(args.seeds, metrics["student_score"]["values"])),
                dict(zip(args.seeds, baseline["student_score"]["values"])),
            )
        if summaries[name]["metric"] == "accuracy" and len(args.seeds) > 1:
            time_steps = RunConfig(**{**base, **changes}).time_steps
            flips[name] = {
                seed: correct_at(args.out / name / f"seed-{seed}", time_steps, score)
                for seed, score in zip(args.seeds, metrics["student_score"]["values"])
            }
            row["flips"] = example_flips(flips[name])
            if name != "baseline":
                row["flip_rate_minus_baseline"] = flip_difference(flips[name], flips["baseline"])
        rows.append(row)

    lines = [
        "| variant | student (spiking) | student / teacher | energy / teacher | student - baseline (paired) | "
        "std / baseline's (F-test p, paired p) | std of the later selection scores |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        diff, late = row.get("student_score_minus_baseline"), row["late_evaluation_std"]
        lines.append(
            f"| {row['variant']} | {format_spread(row['student_score'])} | {format_spread(row['score_ratio'])} | "
            f"{format_spread(row['student_energy_ratio'], 3)} | {format_spread(diff) if diff else '-'} | "
            f"{_ratio(row.get('student_score_spread_vs_baseline'))} | {format_spread(late) if late else '-'} |"
        )
    if flips:
        lines += [
            "",
            "| variant | two seeds differ on (flip rate) | minus the baseline's (95% over examples) | "
            "examples that flip at all | std from the flips alone | std observed |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for row in rows:
            f, d = row["flips"], row.get("flip_rate_minus_baseline")
            difference = f"{d['difference']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]" if d else "-"
            lines.append(
                f"| {row['variant']} | {f['flip_rate']:.4f} | {difference} | {f['unstable_fraction']:.3f} | "
                f"{f['flip_floor_std']:.4f} | {f['observed_std']:.4f} |"
            )
    lines += [
        "",
        "| seed | teacher | " + " | ".join(name for name, _ in variants) + " |",
        "|---:|---:|" + "---:|" * len(variants),
    ]
    for i, seed in enumerate(args.seeds):
        cells = [f"{r['student_score']['values'][i]:.4f} @ {r['student_energy_ratio']['values'][i]:.3f}" for r in rows]
        lines.append(f"| {seed} | {rows[0]['teacher_score']['values'][i]:.4f} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(
        json.dumps(
            {
                "config": args.config,
                "set": fixed,
                "seeds": args.seeds,
                "rows": rows,
                "table": table,
                "environment": summaries["baseline"].get("environment"),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
