"""Merge two comparisons of the same seeds: an earlier `eqspike compare --seeds ...` and baselines added to
it later (`eqspike compare --baselines ann,qnn --baselines-only --seeds ...`), into one summary over
seeds with the paired differences of `eqspike compare` (``eqspike.app.compare_report.summarize_seeds``).

Where both hold a row of the same method and T (the dense student, trained again), the two scores must
be equal: the row is then the same run reproduced, and the merge says so; where they differ it stops.

    python benchmarks/merge_compare.py --earlier docs/results/seeds/compare_quickstart_T4 \\
        --later runs/compare-seeds --seeds 42 43 44 --time-steps 4 \\
        --results benchmarks/results/compare_quickstart_baselines_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from eqspike.app.compare_report import plot_pareto, seeds_table, summarize_seeds


def read_compare(folder: Path, seed: int) -> dict[str, Any]:
    """A seed's compare.json: FOLDER/seed-S/compare.json (a run folder) or FOLDER/seed-S_compare.json (a copy)."""
    for path in (folder / f"seed-{seed}" / "compare.json", folder / f"seed-{seed}_compare.json"):
        if path.is_file():
            return json.loads(path.read_text())
    raise SystemExit(f"{folder}: no compare.json for seed {seed}")


def merge(earlier: dict[str, Any], later: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The earlier result with the later one's rows added; the methods found in both (equal scores)."""
    if earlier["teacher_score"] != later["teacher_score"]:
        raise SystemExit(f"the teachers differ: {earlier['teacher_score']} against {later['teacher_score']}")
    rows = {(r["method"], r["time_steps"]): r for r in earlier["rows"]}
    both = []
    for row in later["rows"]:
        key = (row["method"], row["time_steps"])
        if key in rows:
            if rows[key]["score"] != row["score"]:
                raise SystemExit(f"{key}: the earlier run scored {rows[key]['score']}, the later {row['score']}")
            both.append(row["method"])
        rows[key] = {**rows[key], **row} if key in rows else row
    return {**earlier, "rows": list(rows.values()), "baselines_added": later.get("baselines")}, sorted(set(both))


def mean_result(results: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One comparison whose scores and energies are the means over the seeds (for the Pareto plot)."""
    first = next(iter(results.values()))
    keys = {(r["method"], r["time_steps"]) for result in results.values() for r in result["rows"]}
    rows = []
    for method, T in sorted(keys):
        found = [
            r
            for result in results.values()
            for r in result["rows"]
            if (r["method"], r["time_steps"]) == (method, T) and r["score"] is not None
        ]
        rows.append(
            {
                "method": method,
                "time_steps": T,
                "score": statistics.mean(r["score"] for r in found),
                "energy_pj": statistics.mean(r["energy_pj"] for r in found),
            }
        )
    return {
        **first,
        "task": f"{first['task']}, mean of {len(results)} seeds",
        "rows": rows,
        "teacher_score": statistics.mean(r["teacher_score"] for r in results.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--earlier", required=True, type=Path, help="the earlier comparison's folder")
    parser.add_argument("--later", required=True, type=Path, help="the folder of the baselines added later")
    parser.add_argument("--seeds", required=True, type=int, nargs="+")
    parser.add_argument("--time-steps", type=int, nargs="+", default=[4])
    parser.add_argument("--results", required=True, type=Path, help="the merged summary (JSON); a .md beside it")
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="also draw accuracy against energy (the means over seeds; eqspike.app.compare_report.plot_pareto)",
    )
    args = parser.parse_args()
    results, reproduced = {}, {}
    for seed in args.seeds:
        results[seed], reproduced[str(seed)] = merge(read_compare(args.earlier, seed), read_compare(args.later, seed))
    summary = {
        **summarize_seeds(results, args.time_steps),
        "reproduced": reproduced,
        "sources": {"earlier": str(args.earlier), "later": str(args.later)},
        "per_seed": {
            str(s): {r["method"]: r["score"] for r in results[s]["rows"] if r["time_steps"] == args.time_steps[0]}
            for s in args.seeds
        },
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(summary, indent=2) + "\n")
    table = seeds_table(summary)
    args.results.with_suffix(".md").write_text(table + "\n")
    print(table)
    if args.plot:
        plot_pareto(mean_result(results), args.plot)
    print("runs found in both, with equal scores:", reproduced)
    print(f"wrote {args.results}, {args.results.with_suffix('.md')}")


if __name__ == "__main__":
    main()
