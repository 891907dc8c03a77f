"""What the spikes cost on a task: the spiking student at several T and depths against the dense student
of the same shape, paired by seed, and where the points go (issue 21).

    python benchmarks/bench_gap.py --config configs/fortunes_many.yaml --time-steps 2 4 8 16 --layers 3 \\
        --seeds 42 43 44 --out runs/gap-fortunes_many --results benchmarks/results/bench_gap_fortunes_many_cpu.json

For each depth L and seed: the dense student (``--student-type dense``) in ``OUT/L{L}/dense/seed-S`` and one
spiking student per T, trained for that T, in ``OUT/L{L}/T{T}/seed-S`` (``eqspike distill --seeds``; the
same seed gives them the same teacher, data order and selection split, so the differences are paired;
finished runs with the same settings are reused). Then ``eqspike diagnose RUN --time-steps T
--attribution --dense-run ...`` on every spiking run (its first ``--attribution-batches`` dev batches).

``--variant NAME:key=value,...`` adds, at each T, a spiking student with those settings (for example burst
spikes, ``burst:spike_levels=intermediate=2``) in ``OUT/L{L}/T{T}-NAME/seed-S``, paired with the same dense
student. With ``--infinity``, also the student trained on the exact rates (``--train-for infinity``: the same
network with clipping and implicit gradients, but no T-step rounding) in ``OUT/L{L}/Tinf/seed-S``, scored
as a spiking network at each T of ``--time-steps`` and at 32 (``eqspike evaluate``): what the network
reaches without the rounding of T steps, and how much of it each T keeps.

Prints, per depth and T: the teacher, the dense and the spiking student (mean +- std over seeds), the
spiking student's paired difference to the dense one with its 95% interval, its ratio to the teacher
and its energy; and the parts whose restoration recovers the most points (mean over seeds). Then how
well each run fits its targets at the end of training (the mean of its last ten logged losses per stage:
hidden states and attention in stage 1, the teacher's soft labels and the gold labels in stage 2): a
student that cannot fit the teacher's hidden states loses its points in training. Writes the same as
JSON to ``--results``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from eqspike.analysis.seeds import format_spread, paired_differences, spread
from eqspike.app.cli import main as eqspike_main
from eqspike.distill.config import RunConfig
from eqspike.distill.run_directory import RunDirectory
from eqspike.distill.seeds import distill_seeds, seed_run
from eqspike.distill.yaml_io import load_yaml

sys.path.insert(0, str(Path(__file__).parent))
from bench_spread import parse_variant  # noqa: E402


def attribution_of(run: Path, time_steps: int, dense_run: Path, batches: int | None) -> dict[str, Any]:
    """The run's attribution at its own T (computed once; reused while newer than its metrics.json)."""
    out = run / "attribution"
    path = out / "attribution.json"
    if not path.is_file() or path.stat().st_mtime < (run / "metrics.json").stat().st_mtime:
        args = [
            "diagnose",
            str(run),
            "--time-steps",
            str(time_steps),
            "--attribution",
            "--dense-run",
            str(dense_run),
            "--out",
            str(out),
        ] + (["--batches", str(batches)] if batches else [])
        if eqspike_main(args) != 0:
            raise SystemExit(f"eqspike {' '.join(args)} failed")
    return json.loads(path.read_text())


FIT_LOSSES = {"intermediate": ("hidden", "attention"), "prediction": ("soft", "gold")}


def training_fit(run: Path, last: int = 10) -> dict[str, float]:
    """The mean of the last ``last`` logged values of each stage's losses (FIT_LOSSES) of a run."""
    records = [r for r in RunDirectory(run).log_records() if "loss" in r]
    fit = {}
    for stage, keys in FIT_LOSSES.items():
        logged = [r for r in records if r.get("stage") == stage][-last:]
        for key in keys:
            values = [r[key] for r in logged if key in r]
            if values:
                fit[key] = float(np.mean(values))
    return fit


def scores_at(run: Path, time_steps: list[int]) -> dict[int, tuple[float, float]]:
    """The run's dev score and energy / teacher as a spiking network at each T (``eqspike evaluate``; reused
    while newer than its metrics.json and covering those T)."""
    path = run / "evaluate.json"

    def read() -> dict[int, tuple[float, float]]:
        # the latest row per T with the student's own neuron, on distill's draw of the dev set (rows that
        # name their examples; earlier ones scored the first N)
        return {
            r["time_steps"]: (r["score"], r["energy_ratio"])
            for r in json.loads(path.read_text())["rows"]
            if "energy_ratio" in r and "examples" in r and not r.get("neuron")
        }

    rows = read() if path.is_file() and path.stat().st_mtime >= (run / "metrics.json").stat().st_mtime else {}
    if not set(time_steps) <= set(rows):
        args = ["evaluate", str(run), "--time-steps", *map(str, time_steps)]
        if eqspike_main(args) != 0:
            raise SystemExit(f"eqspike {' '.join(args)} failed")
        rows = read()
    return {t: rows[t] for t in time_steps}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the YAML settings (the spiking students' time_steps is overridden)")
    p.add_argument("--time-steps", type=int, nargs="+", default=[2, 4, 8, 16], help="a spiking student trained for each")
    p.add_argument("--layers", type=int, nargs="+", default=None, help="student depths (default: the config's)")
    p.add_argument("--seeds", type=int, nargs="+", default=[42])
    p.add_argument("--set", default="", metavar="KEY=VALUE,...", help="settings over the config for every run")
    p.add_argument("--attribution-batches", type=int, default=None, help="attribute on the first N dev batches only")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:key=value,...",
        help="also a spiking student with these settings at each T, in OUT/L{L}/T{T}-NAME (repeatable), "
        "e.g. burst:spike_levels=intermediate=2",
    )
    p.add_argument(
        "--infinity",
        action="store_true",
        help="also train the student on the exact rates (T = infinity) and score it at each T and at 32",
    )
    p.add_argument("--out", type=Path, required=True, help="run directories: OUT/L{L}/{dense,T{T}}/seed-S")
    p.add_argument("--results", type=Path, required=True, help="the JSON file written")
    args = p.parse_args(argv)

    base = {**load_yaml(args.config), **parse_variant(f"set:{args.set}")[1]}
    layers = args.layers or [RunConfig(**base).student_layers]
    command = " ".join(["bench_gap.py", *(argv or sys.argv[1:])])
    say = lambda m: print(m, flush=True)  # noqa: E731
    variants = [("", {})] + [parse_variant(v) for v in args.variant]
    rows, fits, infinity_rows = [], [], []
    for depth in layers:

        def config(name: str, **changes: Any) -> RunConfig:
            return RunConfig(
                **{**base, "student_layers": depth, **changes, "output_dir": str(args.out / f"L{depth}" / name), "resume": True}
            )

        print(f"== L = {depth}: dense student", flush=True)
        dense_config = config("dense", student_type="dense")
        dense = distill_seeds(dense_config, args.seeds, log=say, command=command)["metrics"]
        fits.append(_fit_row(depth, "dense", dense_config, args.seeds))
        if args.infinity:
            print(f"== L = {depth}: the student trained on the exact rates (T = infinity)", flush=True)
            exact_config = config("Tinf", train_for="infinity")
            distill_seeds(exact_config, args.seeds, log=say, command=command)
            fits.append(_fit_row(depth, "T = infinity", exact_config, args.seeds))
            steps = sorted(set(args.time_steps) | {32})
            scored = [scores_at(Path(seed_run(exact_config, s).output_dir), steps) for s in args.seeds]
            infinity_rows.append(
                {
                    "layers": depth,
                    "seeds": args.seeds,
                    "score_at": {t: spread([sc[t][0] for sc in scored]) for t in steps},
                    "energy_at": {t: spread([sc[t][1] for sc in scored]) for t in steps},
                }
            )
        for t, (variant, changes) in [(t, v) for t in args.time_steps for v in variants]:
            label = f"T = {t}" + (f", {variant}" if variant else "")
            print(f"== L = {depth}: spiking student, {label} {changes or ''}", flush=True)
            spiking_config = config(f"T{t}" + (f"-{variant}" if variant else ""), time_steps=t, **changes)
            spiking = distill_seeds(spiking_config, args.seeds, log=say, command=command)["metrics"]
            fits.append(_fit_row(depth, label, spiking_config, args.seeds))
            attributions = [
                attribution_of(
                    Path(seed_run(spiking_config, s).output_dir),
                    t,
                    Path(seed_run(dense_config, s).output_dir),
                    args.attribution_batches,
                )
                for s in args.seeds
            ]
            recovered = {
                part: float(np.mean([a["recovered"][part]["clipped"][0] for a in attributions]))
                for part in attributions[0]["recovered"]
            }
            score = dict(zip(args.seeds, spiking["student_score"]["values"]))
            rows.append(
                {
                    "layers": depth,
                    "time_steps": t,
                    "variant": variant,
                    "changes": changes,
                    "seeds": args.seeds,
                    "teacher_score": spiking["teacher_score"],
                    "dense_score": dense["student_score"],
                    "spiking_score": spiking["student_score"],
                    "score_ratio": spiking["score_ratio"],
                    "dense_score_ratio": dense["score_ratio"],
                    "energy_ratio": spiking["student_energy_ratio"],
                    "spiking_minus_dense": paired_differences(score, dict(zip(args.seeds, dense["student_score"]["values"]))),
                    "dense_equivalent_score": spread([a["dense_equivalent_score"] for a in attributions]),
                    "recovered_clipped": recovered,
                    "attribution_examples": attributions[0]["examples"],
                    "num_labels": attributions[0]["num_labels"],
                }
            )

    lines = [
        "| L | T | teacher | dense student | spiking student | spiking - dense (paired) | spiking / teacher | "
        "energy / teacher | recovers the most, put back clipped (points) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        top = sorted(r["recovered_clipped"].items(), key=lambda kv: -kv[1])[:3]
        lines.append(
            f"| {r['layers']} | {r['time_steps']}{', ' + r['variant'] if r['variant'] else ''} | "
            f"{format_spread(r['teacher_score'])} | "
            f"{format_spread(r['dense_score'])} | {format_spread(r['spiking_score'])} | "
            f"{format_spread(r['spiking_minus_dense'])} | {format_spread(r['score_ratio'])} | "
            f"{format_spread(r['energy_ratio'], 3)} | "
            + ", ".join(f"{part.removeprefix('kind:')} {100 * v:+.1f}" for part, v in top)
            + " |"
        )
    if infinity_rows:
        steps = list(infinity_rows[0]["score_at"])
        lines += [
            "",
            "| L | trained on the exact rates, scored spiking at T = | " + " | ".join(map(str, steps)) + " |",
            "|---:|---|" + "---:|" * len(steps),
        ]
        for r in infinity_rows:
            lines.append(f"| {r['layers']} | score | " + " | ".join(format_spread(r["score_at"][t]) for t in steps) + " |")
            lines.append(
                f"| {r['layers']} | energy / teacher | " + " | ".join(format_spread(r["energy_at"][t], 3) for t in steps) + " |"
            )
    keys = [key for pair in FIT_LOSSES.values() for key in pair]
    lines += ["", "| L | student | " + " | ".join(f"{k} loss, end" for k in keys) + " |", "|---:|---|" + "---:|" * len(keys)]
    for f in fits:
        lines.append(
            f"| {f['layers']} | {f['student']} | "
            + " | ".join(format_spread(f["fit"][k], 3) if k in f["fit"] else "-" for k in keys)
            + " |"
        )
    table = "\n".join(lines)
    print(table)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(
        json.dumps(
            {
                "config": args.config,
                "set": args.set,
                "seeds": args.seeds,
                "layers": layers,
                "time_steps": args.time_steps,
                "rows": rows,
                "infinity": infinity_rows,
                "fit": fits,
                "table": table,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.results}")
    return 0


def _fit_row(depth: int, student: str, config: RunConfig, seeds: list[int]) -> dict[str, Any]:
    """The training fit (``training_fit``) of one kind of student, as a spread over seeds."""
    per_seed = [training_fit(Path(seed_run(config, s).output_dir)) for s in seeds]
    keys = set.intersection(*(set(f) for f in per_seed))
    return {"layers": depth, "student": student, "fit": {k: spread([f[k] for f in per_seed]) for k in sorted(keys)}}


if __name__ == "__main__":
    sys.exit(main())
