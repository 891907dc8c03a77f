"""One student per seed, and their spread: ``eqspike distill --seeds 42 43 44``.

Each seed gets its own run directory ``OUT/seed-S`` (the seed sets the data order, the selection split,
the initialisation, and the teacher's fine-tuning when the teacher is fine-tuned here), and ``OUT``
gets the summary over seeds (``eqspike.analysis.seeds``):

    OUT/seeds.json   per metric: n, mean, std, min, max, the 95% intervals of the mean and of one more
                     run, the values; the runs' settings
    OUT/seeds.md     the same as a Markdown table
    OUT/seeds.csv    one row per metric
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eqspike.analysis.seeds import seed_summary, summary_csv, summary_table
from eqspike.distill.config import RunConfig
from eqspike.distill.run_directory import INVOCATION, RunDirectory, RunDirectoryError
from eqspike.distill.trainer import Distiller
from eqspike.runtime.files import write_atomic


def seed_run(config: RunConfig, seed: int) -> RunConfig:
    """The settings of seed ``seed``'s run: ``config`` with that seed, in OUT/seed-S."""
    root = RunDirectory.root_for(config)
    return config.replace(seed=seed, output_dir=str(root / f"seed-{seed}"))


def distill_seeds(config: RunConfig, seeds: list[int], log=print, command: str | None = None) -> dict[str, Any]:
    """Distil one student per seed and write the summary. With ``resume``, a seed whose run finished
    with the same settings is reused, one started is resumed (from its checkpoint, or from the beginning
    when it stopped before one) and one not started is started;
    a finished run with other settings is refused by name."""
    if len(set(seeds)) != len(seeds):
        raise RunDirectoryError(f"--seeds {' '.join(map(str, seeds))} names a seed twice")
    root = RunDirectory.root_for(config)
    results: dict[int, dict[str, Any]] = {}
    for number, seed in enumerate(seeds, start=1):
        run_config = seed_run(config, seed)
        run = RunDirectory(run_config.output_dir)
        log(f"seeds: seed {seed} ({number} of {len(seeds)}) in {run.root}")
        if config.resume and run.finished:
            differ = run.settings_differ(run_config)
            if differ:
                raise RunDirectoryError(
                    f"{run.root} finished with other settings ({', '.join(differ)}); pass --overwrite "
                    f"to train it again or choose another --output-dir"
                )
            log(f"seeds: reusing the finished run {run.root}")
            results[seed] = run.result()
            continue
        if config.resume and not run.started:
            run_config = run_config.replace(resume=False)
        result = Distiller(run_config, log, command=command).run()
        if result.get("status") == "interrupted":
            log(f"seeds: stopped in seed {seed} (max_steps); continue with --resume")
            return {"status": "interrupted", "seed": seed}
        results[seed] = result
    summary = {
        **seed_summary(results),
        "task": results[seeds[0]]["task"],
        "metric": results[seeds[0]]["metric"],
        "runs": {str(s): str(Path(seed_run(config, s).output_dir)) for s in seeds},
        "config": {k: v for k, v in config.to_dict().items() if k not in INVOCATION + ("seed",)},
        "environment": results[seeds[0]].get("environment"),
        "command": command,
    }
    root.mkdir(parents=True, exist_ok=True)
    write_atomic(root / "seeds.json", json.dumps(summary, indent=2) + "\n")
    table = summary_table(summary)
    write_atomic(root / "seeds.md", f"{summary['task']}, {summary['metric']} on the dev set\n\n{table}\n")
    write_atomic(root / "seeds.csv", summary_csv(summary))
    log(table)
    log(f"wrote {root / 'seeds.json'}, {root / 'seeds.md'}, {root / 'seeds.csv'}")
    return summary
