"""The commands that train: ``teacher``, ``distill``, ``compare``, and ``selfcheck`` of the core."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from eqspike.analysis.diagnostics import check_time_steps
from eqspike.app.compare import compare, compare_seeds
from eqspike.app.compare_methods import check_comparison
from eqspike.core.checks import selfcheck
from eqspike.distill.flags import config_from_args
from eqspike.distill.inputs import RunInputs
from eqspike.distill.run_directory import RunDirectory
from eqspike.distill.seeds import distill_seeds
from eqspike.distill.trainer import Distiller
from eqspike.distill.yaml_io import load_yaml
from eqspike.errors import EqspikeError
from eqspike.runtime.devices import resolve_device
from eqspike.runtime.files import check_output_dir


def say(message: str) -> None:
    """A line on stdout, flushed at once (progress in logs of long runs)."""
    print(message, flush=True)


def cmd_teacher(args: argparse.Namespace) -> int:
    """Fine-tune (or find) the teacher for a task and report its dev score."""
    config = config_from_args(args)
    inputs = RunInputs.open(config, resolve_device(config.device), say)
    data, teacher = inputs.data, inputs.teacher
    score = teacher.card.get("dev_score")
    say(
        f"teacher {teacher.path}: task {data.task.name}, dev {data.task.metric} "
        + (f"{score:.4f}" if score is not None else "not measured (provided checkpoint)")
    )
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    """Distil a spiking student from the teacher and evaluate it as a spiking network."""
    fixed = {}
    run = RunDirectory(args.output_dir) if args.output_dir else None
    if args.seeds:  # one student per seed, OUT/seed-S, and the summary over them in OUT
        config = config_from_args(args)
        distill_seeds(config, args.seeds, say, command=_command_line())
        return 0
    if args.resume and run is not None and run.settings.is_file():
        # A resumed run continues with every setting it was started with (max_steps included); a YAML file or
        # flag given now that contradicts one is refused by name, but for the continuation settings.
        saved = run.saved_settings()
        given = load_yaml(args.config) if args.config else {}
        fixed = {
            k: v
            for k, v in saved.items()
            if getattr(args, k, None) is None and k not in given and k not in ("resume", "overwrite")
        }
    config = config_from_args(args, **fixed)

    Distiller(config, say, command=_command_line()).run()  # joins and leaves torchrun's process group itself
    return 0


def _command_line() -> str:
    """The command as typed (for metrics.json and the model card); under torchrun, as one process runs it."""
    return shlex.join(["eqspike", *sys.argv[1:]])


def cmd_compare(args: argparse.Namespace) -> int:
    """Train eqspike and the SpikeLM baseline on the same budget and compare them."""
    time_steps = check_time_steps(args.compare_time_steps)
    config = config_from_args(args)
    out = check_output_dir(Path(args.out) if args.out else Path("runs") / f"compare-{config.task or 'data'}", "--out")
    try:
        baselines = check_comparison(args.baselines, args.match_energy, args.baselines_only)
    except ValueError as error:
        raise EqspikeError(str(error)) from None
    if args.seeds:
        compare_seeds(
            config,
            time_steps,
            out,
            args.seeds,
            say,
            match_energy=args.match_energy,
            baselines=baselines,
            baselines_only=args.baselines_only,
        )
    else:
        compare(
            config, time_steps, out, say, match_energy=args.match_energy, baselines=baselines, baselines_only=args.baselines_only
        )
    return 0


def cmd_selfcheck(args: argparse.Namespace) -> int:
    """Check this installation's core on this device (``eqspike.core.checks.selfcheck``): one line per check."""
    rows = selfcheck(args.seed)
    width = max(len(r[0]) for r in rows)
    for name, detail, ok in rows:
        print(f"{'PASS' if ok else 'FAIL'}  {name:<{width}}  {detail}")
    failed = sum(not ok for _, _, ok in rows)
    print(f"{len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0
