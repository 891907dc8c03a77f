"""What the spikes cost on a task: the spiking student at several T and depths against the dense student
of the same shape, paired by seed, and where the points go (issue 21).

    python benchmarks/bench_gap.py --config configs/fortunes_many.yaml --time-steps 2 4 8 16 --layers 3 \\
        --seeds 42 43 44 --out runs/gap-fortunes_many --results benchmarks/results/bench_gap_fortunes_many_cpu.json

For each depth L and seed: the dense student (``--student-type dense``) in ``OUT/L{L}/dense/seed-S`` and one
spiking student per T, trained for that T, in ``OUT/L{L}/T{T}/seed-S`` (``eqspike distill --seeds``; the
same seed gives them the same teacher, data order and selection split, so the differences are paired;
finished runs with the same settings are reused). Then ``eqspike diagnose RUN --time-steps T
--attribution --dense-run ...`` on every spiking run (its first ``--attribution-batches`` dev batches).

Prints, per depth and T: the teacher, the dense and the spiking student (mean +- std over seeds), the
spiking student's paired difference to the dense one with its 95% interval, its ratio to the teacher
and its energy; and the parts whose restoration recovers the most points (mean over seeds). Writes the
same as JSON to ``--results``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from eqspike.analysis.seeds import format_spread, paired_differences, spread
from eqspike.cli import main as eqspike_main
from eqspike.config import RunConfig, load_yaml
from eqspike.distill.seeds import distill_seeds, seed_run

sys.path.insert(0, str(Path(__file__).parent))
from bench_spread import parse_variant  # noqa: E402


def attribution_of(run: Path, time_steps: int, dense_run: Path, batches: int | None) -> dict[str, Any]:
    """The run's attribution at its own T (computed once; reused while newer than its metrics.json)."""
    out = run / "attribution"
    path = out / "attribution.json"
    if not path.is_file() or path.stat().st_mtime < (run / "metrics.json").stat().st_mtime:
        args = ["diagnose", str(run), "--time-steps", str(time_steps), "--attribution", "--dense-run", str(dense_run),
                "--out", str(out)] + (["--batches", str(batches)] if batches else [])
        if eqspike_main(args) != 0:
            raise SystemExit(f"eqspike {' '.join(args)} failed")
    return json.loads(path.read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the YAML settings (the spiking students' time_steps is overridden)")
    p.add_argument("--time-steps", type=int, nargs="+", default=[2, 4, 8, 16], help="a spiking student trained for each")
    p.add_argument("--layers", type=int, nargs="+", default=None, help="student depths (default: the config's)")
    p.add_argument("--seeds", type=int, nargs="+", default=[42])
    p.add_argument("--set", default="", metavar="KEY=VALUE,...", help="settings over the config for every run")
    p.add_argument("--attribution-batches", type=int, default=None, help="attribute on the first N dev batches only")
    p.add_argument("--out", type=Path, required=True, help="run directories: OUT/L{L}/{dense,T{T}}/seed-S")
    p.add_argument("--results", type=Path, required=True, help="the JSON file written")
    args = p.parse_args(argv)

    base = {**load_yaml(args.config), **parse_variant(f"set:{args.set}")[1]}
    layers = args.layers or [RunConfig(**base).student_layers]
    command = " ".join(["bench_gap.py", *(argv or sys.argv[1:])])
    say = lambda m: print(m, flush=True)  # noqa: E731
    rows = []
    for depth in layers:
        def config(name: str, **changes: Any) -> RunConfig:
            return RunConfig(**{**base, "student_layers": depth, **changes, "output_dir": str(args.out / f"L{depth}" / name),
                                "resume": True})

        print(f"== L = {depth}: dense student", flush=True)
        dense_config = config("dense", student_type="dense")
        dense = distill_seeds(dense_config, args.seeds, log=say, command=command)["metrics"]
        for t in args.time_steps:
            print(f"== L = {depth}: spiking student, T = {t}", flush=True)
            spiking_config = config(f"T{t}", time_steps=t)
            spiking = distill_seeds(spiking_config, args.seeds, log=say, command=command)["metrics"]
            attributions = [attribution_of(Path(seed_run(spiking_config, s).output_dir), t,
                                           Path(seed_run(dense_config, s).output_dir), args.attribution_batches)
                            for s in args.seeds]
            recovered = {part: float(np.mean([a["recovered"][part]["clipped"][0] for a in attributions]))
                         for part in attributions[0]["recovered"]}
            score = dict(zip(args.seeds, spiking["student_score"]["values"]))
            rows.append({
                "layers": depth, "time_steps": t, "seeds": args.seeds,
                "teacher_score": spiking["teacher_score"], "dense_score": dense["student_score"],
                "spiking_score": spiking["student_score"], "score_ratio": spiking["score_ratio"],
                "dense_score_ratio": dense["score_ratio"], "energy_ratio": spiking["student_energy_ratio"],
                "spiking_minus_dense": paired_differences(score, dict(zip(args.seeds, dense["student_score"]["values"]))),
                "dense_equivalent_score": spread([a["dense_equivalent_score"] for a in attributions]),
                "recovered_clipped": recovered,
                "attribution_examples": attributions[0]["examples"],
                "num_labels": attributions[0]["num_labels"],
            })

    lines = ["| L | T | teacher | dense student | spiking student | spiking - dense (paired) | spiking / teacher | "
             "energy / teacher | recovers the most, put back clipped (points) |", "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        top = sorted(r["recovered_clipped"].items(), key=lambda kv: -kv[1])[:3]
        lines.append(f"| {r['layers']} | {r['time_steps']} | {format_spread(r['teacher_score'])} | "
                     f"{format_spread(r['dense_score'])} | {format_spread(r['spiking_score'])} | "
                     f"{format_spread(r['spiking_minus_dense'])} | {format_spread(r['score_ratio'])} | "
                     f"{format_spread(r['energy_ratio'], 3)} | "
                     + ", ".join(f"{part.removeprefix('kind:')} {100 * v:+.1f}" for part, v in top) + " |")
    table = "\n".join(lines)
    print(table)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"config": args.config, "set": args.set, "seeds": args.seeds, "layers": layers,
                                        "time_steps": args.time_steps, "rows": rows, "table": table}, indent=2) + "\n")
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
