"""The commands on a trained run: ``evaluate``, ``diagnose``, ``energy`` and ``predict``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from eqspike.analysis.attribution import attribute
from eqspike.analysis.attribution_report import format_attribution, write_attribution
from eqspike.analysis.diagnostics import check_time_steps, diagnose, score_vs_time_steps
from eqspike.analysis.report import format_table, plot, write_report
from eqspike.app.commands import say
from eqspike.app.prediction import Predictor, pairing_warning, read_inputs
from eqspike.data.batches import EncodedSplit
from eqspike.data.tasks import Example, load_task_data
from eqspike.distill.prepare import subsample
from eqspike.distill.run_directory import RunDirectory
from eqspike.errors import EqspikeError
from eqspike.runtime.devices import resolve_device
from eqspike.runtime.files import check_output_dir, check_output_file, write_atomic


def _load_run(
    run_dir: Path, max_eval_examples: int | None, device_name: str | None, neuron: dict | None = None, command: str | None = None
):
    """The student, its task data and settings of a run directory written by `eqspike distill`;
    ``neuron`` overrides the student's neuron (rounding, hysteresis) for this evaluation; ``command``
    (evaluate, diagnose) refuses a student without spiking populations before the data is read."""
    run = RunDirectory(run_dir, writes=False)
    run.require_student()
    config = run.saved_config()
    device = resolve_device(device_name or config.device)
    overrides = {k: v for k, v in (neuron or {}).items() if v is not None}
    student = run.load_student(device, **overrides)
    if command == "energy":
        if not hasattr(student, "population_names") and not hasattr(student, "spiking_modules"):
            raise EqspikeError(
                f"energy: {run_dir} holds a {student.config.model_type!r} student, which fires no spikes; "
                f"its energy is the dense_student rows of a spiking student's report "
                f"(`eqspike energy SPIKING_RUN`)"
            )
    elif command is not None:
        _require_spiking_equilibrium(student, command, run_dir)
    tokenizer = run.load_tokenizer()
    task = load_task_data(config.task, config.data_dir, config.train_file, config.validation_file, config.label_type)
    # distill's draw (seeded by the data seed), so that the run's own T scores what distill scored
    limit = max_eval_examples or config.max_eval_examples
    data_seed = config.seed if config.data_seed is None else config.data_seed
    splits = {
        name: EncodedSplit(subsample(examples, limit, data_seed), tokenizer, config.max_seq_length)
        for name, examples in task.validation.items()
    }
    teacher_score = (run.result() or {}).get("teacher_score")
    return config, student, task, splits, device, teacher_score


def _require_spiking_equilibrium(student, command: str, run_dir: Path) -> None:
    """``evaluate`` and ``diagnose`` sweep T over an eqspike student's populations: refuse the others."""
    if not hasattr(student, "population_names"):
        raise EqspikeError(
            f"{command}: {run_dir} holds a {student.config.model_type!r} student, which has no "
            f"populations to run at other T; {command} takes an eqspike spiking student "
            f"('eqspike-spiking-bert'). Its scores are in {run_dir / 'metrics.json'}"
        )


def cmd_evaluate(args: argparse.Namespace) -> int:
    """The task's metrics of a trained student run as a spiking network, at each T."""
    time_steps = check_time_steps(args.time_steps)
    run_dir = Path(args.run_dir)
    check_output_dir(run_dir, "evaluate: the run directory")  # evaluate.json is written there, after the work
    config, student, task, splits, device, _ = _load_run(
        run_dir, args.max_eval_examples, args.device, _neuron(args), command="evaluate"
    )
    predictions: dict | None = {} if args.predictions else None
    rows = score_vs_time_steps(student, task, splits, time_steps, config.eval_batch_size, device, predictions)
    # What each row measured: the examples scored (distill's seeded draw when fewer than all), the neuron.
    scored, total = len(splits[task.main_split]), len(task.validation[task.main_split])
    sample = {"examples": scored, "dev_examples": total}
    if scored < total:
        sample["data_seed"] = config.seed if config.data_seed is None else config.data_seed
    when = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    rows = [{**row, **sample, "neuron": _neuron(args), "evaluated_at": when} for row in rows]
    for row in rows:
        say(f"T={row['time_steps']:<4d} {task.metric} {row['score']:.4f}  energy / teacher {row['energy_ratio']:.3f}")
    run = RunDirectory(run_dir)
    for t in time_steps if predictions is not None else ():
        path = run.write_predictions(t, _prediction_rows(task, splits, predictions, t))
        say(f"wrote the predictions at T={t} to {path}")
    out, history = run.add_evaluation(task.name, task.metric, rows)
    say(f"added {len(rows)} rows to {out} ({history} in all, with the earlier evaluations) and the student's model card")
    return 0


def _prediction_rows(task, splits, predictions: dict, time_steps: int) -> list[dict]:
    """One row per example scored: split, its place in the split, label and prediction (by name when the
    task names its labels), correct (classification)."""
    names = task.label_names
    rows = []
    for split_name, split in splits.items():
        for place, (label, predicted) in enumerate(zip(split.labels, predictions[split_name][time_steps])):
            row = {"split": split_name, "example": place}
            if names is None:
                row.update(label=label, prediction=float(predicted), correct="")
            else:
                row.update(label=names[int(label)], prediction=names[int(predicted)], correct=int(int(label) == int(predicted)))
            rows.append(row)
    return rows


def cmd_diagnose(args: argparse.Namespace) -> int:
    """Convergence of spike rates to the equilibrium, accuracy vs T, firing and energy; JSON + plots."""
    time_steps = check_time_steps(args.time_steps)
    run_dir = Path(args.run_dir)
    config, student, task, splits, device, teacher_score = _load_run(
        run_dir, None, args.device, _neuron(args), command="diagnose"
    )
    if args.dense_run and args.attribution is None:
        raise EqspikeError("--dense-run is shown in the attribution report: pass --attribution with it")
    reference, dense_student = _references(teacher_score, args.dense_run)  # checked before the work
    out = check_output_dir(Path(args.out) if args.out else RunDirectory(run_dir, writes=False).diagnostics, "--out")
    split = splits[task.main_split]
    report = diagnose(
        student, task, split, time_steps, args.batch_size or config.eval_batch_size, args.batches, device, teacher_score
    )
    paths = [write_report(report, out), *plot(report, out)]
    say(format_table(report))
    if args.attribution is not None:
        gap = attribute(
            student,
            task,
            split,
            [t for t in time_steps if t <= 16] or time_steps[:1],
            args.batch_size or config.eval_batch_size,
            args.batches,
            device,
            modes=args.attribution or ["clipped"],
            dense_student=dense_student,
        )
        gap.reference = reference
        paths += write_attribution(gap, out)
        say(format_attribution(gap))
    say("wrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_energy(args: argparse.Namespace) -> int:
    """Energy per example under both conventions, against the teacher, dense and quantized baselines."""
    from eqspike.analysis.energy import Hardware
    from eqspike.analysis.energy_report import energy_report
    from eqspike.analysis.energy_report_files import format_report, write_energy_report

    run_dir = Path(args.run_dir)
    hardware = _hardware(args.hardware)  # before the work
    config, student, task, splits, device, _ = _load_run(run_dir, args.max_eval_examples, args.device, command="energy")
    if args.time_steps and not hasattr(student, "population_names") and args.time_steps != [student.config.time_steps]:
        raise EqspikeError(
            f"energy: {run_dir} holds a SpikeLM student, which runs only at the T it was trained for "
            f"({student.config.time_steps}); leave out --time-steps"
        )
    out = check_output_dir(Path(args.out) if args.out else run_dir / "energy", "--out")
    report = energy_report(
        student,
        task,
        splits[task.main_split],
        args.time_steps,
        config.eval_batch_size,
        device,
        hardware or Hardware(),
        args.access,
    )
    paths = write_energy_report(report, out)
    say(format_report(report).split("## Inventory")[0].rstrip())
    say("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _hardware(path: str | None):
    """A hardware profile from a YAML file (``--hardware``), refused with its reason."""
    if path is None:
        return None
    from eqspike.analysis.energy import Hardware

    if not Path(path).is_file():
        raise EqspikeError(
            f"--hardware {path}: no such file (a YAML file of Hardware's fields: add_pj, mac_pj, "
            f"memory_kb, memory_pj_per_64_bits, name, source)"
        )
    try:
        return Hardware.from_yaml(path)
    except (ValueError, TypeError) as error:
        raise EqspikeError(f"--hardware {path}: {error}") from None


def _references(teacher_score: float | None, dense_run: str | None) -> tuple[dict[str, float], object | None]:
    """The teacher's score and, from ``dense_run``, a trained dense student's score and the student."""
    reference = {} if teacher_score is None else {"teacher": teacher_score}
    if not dense_run:
        return reference, None
    run = RunDirectory(Path(dense_run))
    result = run.result()
    if not result or result.get("student_type") != "dense":
        raise EqspikeError(
            f"--dense-run {dense_run}: not a finished run of a dense student (no metrics.json "
            f"with student_type 'dense'); train one with `eqspike distill --student-type dense`"
        )
    reference["dense student"] = result["student_score"]
    return reference, run.load_student()


def cmd_predict(args: argparse.Namespace) -> int:
    """Labels and probabilities of a saved student for texts or a file, as a spiking network at T."""
    if (args.text is None) == (args.file is None):
        raise EqspikeError("give either --text (with an optional --text-pair) or --file")
    if args.text_pair is not None and args.text is None:
        raise EqspikeError("--text-pair needs --text")
    if args.text_pair is not None and len(args.text_pair) != len(args.text):
        raise EqspikeError(f"{len(args.text)} --text but {len(args.text_pair)} --text-pair; give one pair per text")
    if args.output:
        check_output_file(args.output, "--output", inputs=(args.file,))
    predictor = Predictor.load(args.student, resolve_device(args.device or "auto"), args.max_seq_length, **_neuron(args))
    examples = (
        [Example(text, pair, 0) for text, pair in zip(args.text, args.text_pair or [None] * len(args.text))]
        if args.text is not None
        else read_inputs(args.file)
    )
    warning = pairing_warning(predictor.student.config, examples)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    rows = predictor(examples, args.time_steps, args.mode, args.batch_size)
    lines = [
        json.dumps({"text": e.text_a, **({"text_pair": e.text_b} if e.text_b is not None else {}), **row})
        for e, row in zip(examples, rows)
    ]
    if args.output:
        write_atomic(Path(args.output), "".join(line + "\n" for line in lines))
        say(f"wrote {len(lines)} predictions to {args.output}")
    elif args.text is not None and sys.stdout.isatty():
        for e, row in zip(examples, rows):
            others = ", ".join(f"{k} {v:.3f}" for k, v in sorted(row.get("probabilities", {}).items(), key=lambda kv: -kv[1]))
            say(f"{row.get('label', '')} {row['score']:.3f}  ({others})  <- {e.text_a[:60]!r}")
    else:
        print("\n".join(lines), flush=True)
    return 0


def _neuron(args: argparse.Namespace) -> dict:
    """The neuron settings given on the command line (those not given keep the student's own)."""
    return {k: v for k, v in {"rounding": args.rounding, "hysteresis": args.hysteresis}.items() if v is not None}
