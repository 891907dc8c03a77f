"""The ``eqspike`` command line. Thin: it parses arguments, builds a RunConfig, calls library code."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch
from transformers.utils import logging

from eqspike.analysis.attribution import attribute, format_attribution, write_attribution
from eqspike.analysis.diagnostics import check_time_steps, diagnose, score_vs_time_steps
from eqspike.analysis.report import format_table, plot, write_report
from eqspike.app.compare import compare, compare_seeds
from eqspike.app.compare_methods import check_baselines
from eqspike.app.prediction import Predictor, pairing_warning, read_inputs
from eqspike.core.checks import StackedSpikingNetwork, implicit_gradient_check
from eqspike.core.equilibrium import EquilibriumConfig, EquilibriumLayer
from eqspike.core.neurons import (
    NeuronConfig,
    equilibrium_rate,
    simulate_constant_current,
)
from eqspike.core.simulation import simulate
from eqspike.data.batches import EncodedSplit
from eqspike.data.tasks import Example, load_task_data
from eqspike.distill.config import add_config_arguments, config_from_args, load_yaml
from eqspike.distill.inputs import RunInputs
from eqspike.distill.prepare import subsample
from eqspike.distill.run_directory import RunDirectory
from eqspike.distill.seeds import distill_seeds
from eqspike.distill.trainer import Distiller
from eqspike.errors import EqspikeError, float_within, int_at_least
from eqspike.runtime.devices import resolve_device
from eqspike.runtime.distributed import from_environment
from eqspike.runtime.files import check_output_dir, check_output_file, write_atomic
from eqspike.version import __version__


def _log(message: str) -> None:
    print(message, flush=True)


def cmd_teacher(args: argparse.Namespace) -> int:
    """Fine-tune (or find) the teacher for a task and report its dev score."""
    config = config_from_args(args)
    inputs = RunInputs.open(config, resolve_device(config.device), _log)
    data, teacher = inputs.data, inputs.teacher
    score = teacher.card.get("dev_score")
    _log(
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
        distill_seeds(config, args.seeds, _log, command=_command_line())
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

    Distiller(config, _log, command=_command_line()).run()  # joins and leaves torchrun's process group itself
    return 0


def _command_line() -> str:
    """The command as typed (for metrics.json and the model card); under torchrun, as one process runs it."""
    return shlex.join(["eqspike", *sys.argv[1:]])


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
        _log(f"T={row['time_steps']:<4d} {task.metric} {row['score']:.4f}  energy / teacher {row['energy_ratio']:.3f}")
    run = RunDirectory(run_dir)
    for t in time_steps if predictions is not None else ():
        path = run.write_predictions(t, _prediction_rows(task, splits, predictions, t))
        _log(f"wrote the predictions at T={t} to {path}")
    out, history = run.add_evaluation(task.name, task.metric, rows)
    _log(f"added {len(rows)} rows to {out} ({history} in all, with the earlier evaluations) and the student's model card")
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
    _log(format_table(report))
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
        _log(format_attribution(gap))
    _log("wrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_energy(args: argparse.Namespace) -> int:
    """Energy per example under both conventions, against the teacher, dense and quantized baselines."""
    from eqspike.analysis.energy import Hardware
    from eqspike.analysis.energy_report import energy_report, format_report, write_energy_report

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
    _log(format_report(report).split("## Inventory")[0].rstrip())
    _log("wrote " + ", ".join(str(p) for p in paths))
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
        _log(f"wrote {len(lines)} predictions to {args.output}")
    elif args.text is not None and sys.stdout.isatty():
        for e, row in zip(examples, rows):
            others = ", ".join(f"{k} {v:.3f}" for k, v in sorted(row.get("probabilities", {}).items(), key=lambda kv: -kv[1]))
            _log(f"{row.get('label', '')} {row['score']:.3f}  ({others})  <- {e.text_a[:60]!r}")
    else:
        print("\n".join(lines), flush=True)
    return 0


def _neuron(args: argparse.Namespace) -> dict:
    """The neuron settings given on the command line (those not given keep the student's own)."""
    return {k: v for k, v in {"rounding": args.rounding, "hysteresis": args.hysteresis}.items() if v is not None}


def _add_neuron_arguments(parser: argparse.ArgumentParser) -> None:
    """The neuron is a deployment choice: the rate map a student was trained on does not depend on it."""
    parser.add_argument(
        "--rounding",
        choices=["round", "trunc"],
        default=None,
        help="run the student with this neuron (default: the one it was trained with)",
    )
    parser.add_argument(
        "--hysteresis",
        type=float_within(0.0, 0.5),
        default=None,
        help="run the student with this hysteresis, in thresholds, 0-0.5 (default: its own)",
    )


def cmd_compare(args: argparse.Namespace) -> int:
    """Train eqspike and the SpikeLM baseline on the same budget and compare them."""
    time_steps = check_time_steps(args.compare_time_steps)
    config = config_from_args(args)
    out = check_output_dir(Path(args.out) if args.out else Path("runs") / f"compare-{config.task or 'data'}", "--out")
    try:
        baselines = check_baselines(args.baselines)
    except ValueError as error:
        raise EqspikeError(str(error)) from None
    if args.match_energy and ("spikelm" not in baselines or args.baselines_only):
        raise EqspikeError(
            "--match-energy trains eqspike at SpikeLM's energy: keep spikelm in --baselines, without --baselines-only"
        )
    if args.seeds:
        compare_seeds(
            config,
            time_steps,
            out,
            args.seeds,
            _log,
            match_energy=args.match_energy,
            baselines=baselines,
            baselines_only=args.baselines_only,
        )
    else:
        compare(
            config, time_steps, out, _log, match_energy=args.match_energy, baselines=baselines, baselines_only=args.baselines_only
        )
    return 0


def selfcheck(args: argparse.Namespace) -> int:
    """Check this installation's core on this device: the IF rate bound, implicit gradients against
    an unrolled reference, and convergence of spike rates to the equilibrium."""
    generator = torch.Generator().manual_seed(args.seed)
    rows: list[tuple[str, str, bool]] = []

    current = torch.empty(10_000).uniform_(-2, 2, generator=generator)
    for signed in (True, False):
        neuron = NeuronConfig(signed=signed)
        error = (simulate_constant_current(current, 32, neuron).rates - equilibrium_rate(current, neuron)).abs().max().item()
        rows.append(
            (
                f"IF rate bound, {'signed' if signed else 'unsigned'}, T=32",
                f"max error {error:.4f} <= 1/64",
                error <= 1 / 64 + 1e-6,
            )
        )

    for solver in ("anderson", "broyden", "fixed_point_iter"):
        error = implicit_gradient_check(solver=solver, seed=args.seed)
        rows.append((f"implicit gradient, {solver}", f"relative error {error:.1e} < 1e-4", error < 1e-4))

    network = StackedSpikingNetwork(64, 4, feedback=True, feedback_gain=0.3, seed=args.seed)
    x = torch.randn(4, 16, 64, generator=generator)
    with torch.no_grad():
        rate_map = network.rate_map(x)
        star = EquilibriumLayer(EquilibriumConfig(tol=1e-6, max_iter=100))(rate_map).rates
        error = {T: max((r - star[k]).abs().mean().item() for k, r in simulate(rate_map, T).rates.items()) for T in (8, 64)}
    rows.append(
        (
            "spike rates -> equilibrium",
            f"worst population error T=8 {error[8]:.4f}, T=64 {error[64]:.4f}",
            error[64] < 0.25 * error[8],
        )
    )

    width = max(len(r[0]) for r in rows)
    for name, detail, ok in rows:
        print(f"{'PASS' if ok else 'FAIL'}  {name:<{width}}  {detail}")
    failed = sum(not ok for _, _, ok in rows)
    print(f"{len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad argument reported on one line (and where to look) instead of the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


SHORT_USAGE = "%(prog)s [--config FILE] [--SETTING VALUE ...]"


def _add_teacher_command(commands) -> None:
    """`eqspike teacher`."""
    teacher = commands.add_parser(
        "teacher",
        help="fine-tune (or find) the teacher for a task",
        usage=SHORT_USAGE,
        description="Fine-tune the teacher for a task (or find it in the store) and report its dev score.",
    )
    add_config_arguments(teacher)
    teacher.set_defaults(run=cmd_teacher)


def _add_distill_command(commands) -> None:
    """`eqspike distill`."""
    distill = commands.add_parser(
        "distill",
        help="distil a spiking student from a teacher",
        usage=SHORT_USAGE,
        description="Distil a spiking student from a BERT teacher, trained for --time-steps, "
        "and score it as a spiking network. Every setting can also be a key of "
        "the YAML file given with --config.",
    )
    add_config_arguments(distill)
    distill.add_argument(
        "--seeds",
        type=int_at_least(0),
        nargs="+",
        default=None,
        metavar="SEED",
        help="train one student per seed, each in OUTPUT_DIR/seed-SEED, and write the spread over them "
        "(mean, std, min, max, 95%% interval of the teacher's and the student's score and the "
        "energy ratio) to OUTPUT_DIR/seeds.json, seeds.md and seeds.csv; --resume reuses finished seeds "
        "(default: none, one student with --seed)",
    )
    distill.set_defaults(run=cmd_distill)


def _add_evaluate_command(commands) -> None:
    """`eqspike evaluate`."""
    evaluate = commands.add_parser("evaluate", help="score a trained student as a spiking network at several T")
    evaluate.add_argument("run_dir", help="a run directory written by `eqspike distill`")
    evaluate.add_argument(
        "--time-steps",
        type=int_at_least(1),
        nargs="+",
        default=[8, 16, 32, 64],
        help="T values (one simulation to the largest gives them all)",
    )
    evaluate.add_argument(
        "--max-eval-examples",
        type=int_at_least(1),
        default=None,
        help="score this many dev examples (default: the run's setting, else all)",
    )
    evaluate.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="default: the run's device")
    evaluate.add_argument(
        "--predictions",
        action="store_true",
        help="also write each dev example's prediction at each T to RUN/predictions/T<T>.csv "
        "(split, example, label, prediction, correct)",
    )
    _add_neuron_arguments(evaluate)
    evaluate.set_defaults(run=cmd_evaluate)


def _add_compare_command(commands) -> None:
    """`eqspike compare`."""
    comp = commands.add_parser(
        "compare",
        help="eqspike vs the surrogate-gradient SpikeLM baseline and the dense student, same budget",
        usage="%(prog)s [--time-steps T ...] [--out DIR] [--config FILE] [--SETTING VALUE ...]",
        description="At each T: eqspike trained for T and SpikeLM trained at T (backprop through "
        "time), plus eqspike trained for T = infinity and the dense student (eqspike's "
        "architecture without spikes), or the --baselines named; same teacher, data "
        "and budget. "
        "Writes compare.json, compare.md, compare.png and pareto.png.",
    )
    add_config_arguments(comp, exclude=("time_steps", "output_dir", "student_type", "spikelm_time_steps"))
    comp.add_argument(
        "--time-steps",
        dest="compare_time_steps",
        type=int_at_least(1),
        nargs="+",
        default=[4, 8],
        help="T values: eqspike and SpikeLM are trained for each (default: 4 8)",
    )
    comp.add_argument("--out", default=None, help="output folder (default runs/compare-TASK)")
    comp.add_argument(
        "--baselines",
        default="ann,spikelm,infinity",
        metavar="NAME,...",
        help="trained beside eqspike: ann (the dense student, also scored as a W8A8 network), qnn (per T, "
        "the student trained on its T-step quantized map, run as that quantized network), spikelm, "
        "infinity (eqspike trained for T = infinity, run at every T) (default: ann,spikelm,infinity)",
    )
    comp.add_argument(
        "--baselines-only",
        action="store_true",
        help="train and report only the --baselines, not eqspike at each T: baselines added to a comparison made before",
    )
    comp.add_argument(
        "--match-energy",
        action="store_true",
        help="train eqspike at each T under an energy budget equal to SpikeLM's measured energy at that T "
        "(SpikeLM is trained first): accuracy compared at equal or lower energy",
    )
    comp.add_argument(
        "--seeds",
        type=int_at_least(0),
        nargs="+",
        default=None,
        metavar="SEED",
        help="run the whole comparison once per seed (OUT/seed-SEED) and report, per T, eqspike's score and "
        "energy minus SpikeLM's on the same seed, with their 95%% interval (OUT/compare_seeds.json, .md)",
    )
    comp.set_defaults(run=cmd_compare)


def _add_diagnose_command(commands) -> None:
    """`eqspike diagnose`."""
    diag = commands.add_parser("diagnose", help="convergence, accuracy vs T, firing and energy of a trained student")
    diag.add_argument("run_dir", help="a run directory written by `eqspike distill`")
    diag.add_argument(
        "--time-steps",
        type=int_at_least(1),
        nargs="+",
        default=[1, 2, 4, 8, 16, 32, 64, 128],
        help="T values, all read from one simulation to the largest (default: 1 2 4 ... 128)",
    )
    diag.add_argument("--batches", type=int_at_least(1), default=None, help="use only the first N batches of the dev set")
    diag.add_argument("--batch-size", type=int_at_least(1), default=None, help="default: the run's eval batch size")
    diag.add_argument("--out", default=None, help="output folder (default RUN_DIR/diagnostics)")
    diag.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="default: the run's device")
    diag.add_argument(
        "--attribution",
        nargs="*",
        choices=["clipped", "dense"],
        default=None,
        metavar="MODE",
        help="also attribute the spiking network's accuracy gap at each T <= 16 to its populations: the "
        "score each kind, block and the head's population recovers when its neurons stop spiking "
        "and take their exact rate, 'clipped' at the threshold (the default) and/or 'dense' "
        "without one; and per population the fractions clipped and rounded to zero "
        "(OUT/attribution.json, .md, .png). Each mode costs one simulation per part",
    )
    diag.add_argument(
        "--dense-run",
        default=None,
        metavar="DIR",
        help="with --attribution: a dense student's run (`distill --student-type dense`) whose score "
        "the report shows beside the others",
    )
    _add_neuron_arguments(diag)
    diag.set_defaults(run=cmd_diagnose)


def _add_energy_command(commands) -> None:
    """`eqspike energy`."""
    energy = commands.add_parser(
        "energy",
        help="energy per example under both conventions, against teacher, dense and quantized baselines",
        description="Simulates the student on the dev set and counts, per population and op kind, what it does at "
        "each T: under `compute` (arithmetic only, the papers' convention) and `compute_memory` (also "
        "membrane updates and memory traffic). Baselines under the same table: the teacher at FP32, "
        "FP16 and INT8, the student's shape without spikes at FP32 and INT8, and the quantized network "
        "with ceil(log2(2T+1))-bit activations; with the firing rate at which the student breaks even "
        "against each. Writes energy.json, report.md and energy.png.",
    )
    energy.add_argument("run_dir", help="a run directory written by `eqspike distill` (an eqspike spiking student)")
    energy.add_argument(
        "--time-steps",
        type=int_at_least(1),
        nargs="+",
        default=None,
        help="T values (default: the T the student was trained for)",
    )
    energy.add_argument(
        "--access",
        choices=["per_spike", "weight_stationary"],
        default="per_spike",
        help="synaptic weights read at every spike's targets (per_spike) or once per example "
        "(weight_stationary); dense baselines read each weight once",
    )
    energy.add_argument(
        "--hardware",
        default=None,
        metavar="FILE",
        help="a YAML hardware profile (add_pj, mac_pj: pJ by format; memory_kb; memory_pj_per_64_bits); "
        "default: Horowitz's 45 nm table, 32 KB SRAM banks",
    )
    energy.add_argument(
        "--max-eval-examples",
        type=int_at_least(1),
        default=None,
        help="count on this many dev examples (default: the run's setting, else all)",
    )
    energy.add_argument("--out", default=None, help="output folder (default RUN_DIR/energy)")
    energy.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="default: the run's device")
    energy.set_defaults(run=cmd_energy)


def _add_predict_command(commands) -> None:
    """`eqspike predict`."""
    pred = commands.add_parser(
        "predict",
        help="labels and probabilities of a trained student for texts or a file",
        usage="%(prog)s STUDENT (--text TEXT [--text-pair TEXT] | --file FILE) [options]",
        description="Classify texts with a saved student, run as a spiking network for T steps "
        "(default: the T it was trained for). Prints one JSON line per input "
        "(label, its probability, all probabilities), or writes them to --output.",
    )
    pred.add_argument("student", help="a run directory written by `eqspike distill`, or a saved student's folder")
    pred.add_argument("--text", nargs="+", default=None, help="one or more texts to classify")
    pred.add_argument("--text-pair", nargs="+", default=None, help="second texts of pair tasks (one per --text)")
    pred.add_argument(
        "--file",
        default=None,
        help="a CSV, TSV, JSON or JSON-lines file with a sentence1 (or text) "
        "column and an optional sentence2 (or text_pair) column",
    )
    pred.add_argument(
        "--time-steps", type=int_at_least(1), default=None, help="T steps of the spiking network (default: the student's)"
    )
    pred.add_argument(
        "--mode",
        choices=["simulate", "solve"],
        default="simulate",
        help="simulate: the spiking network for T steps; solve: its equilibrium rates (default: simulate)",
    )
    pred.add_argument("--output", default=None, help="write JSON lines here instead of printing them")
    pred.add_argument("--batch-size", type=int_at_least(1), default=32, help="texts per batch (default: 32)")
    pred.add_argument(
        "--max-seq-length",
        type=int_at_least(2),
        default=None,
        help="truncate texts to this many tokens (default: the run's setting, else the student's positions)",
    )
    pred.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="default: auto")
    _add_neuron_arguments(pred)
    pred.set_defaults(run=cmd_predict)


def _add_selfcheck_command(commands) -> None:
    """`eqspike selfcheck`."""
    check = commands.add_parser("selfcheck", help="check the spiking equilibrium core on this machine")
    check.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the random test problems (default: 0)")
    check.set_defaults(run=selfcheck)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="eqspike",
        description="Spiking BERT students by equilibrium-based ANN-to-SNN distillation.",
    )
    parser.add_argument("--version", action="version", version=f"eqspike {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_teacher_command(commands)
    _add_distill_command(commands)
    _add_evaluate_command(commands)
    _add_compare_command(commands)
    _add_diagnose_command(commands)
    _add_energy_command(commands)
    _add_predict_command(commands)
    _add_selfcheck_command(commands)
    return parser


DISTRIBUTED_COMMANDS = ("distill",)


def _quiet_transformers() -> None:
    """eqspike shows its own progress; transformers' per-file loading and saving bars are noise in logs."""
    logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        world_size = from_environment().world_size
        if world_size > 1 and args.command not in DISTRIBUTED_COMMANDS:
            raise EqspikeError(
                f"this command runs in one process; under torchrun only "
                f"{', '.join(DISTRIBUTED_COMMANDS)} is distributed (WORLD_SIZE={world_size})"
            )
        if args.command != "selfcheck":
            _quiet_transformers()
        return args.run(args)
    except EqspikeError as error:
        print(f"eqspike {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command == "distill" and args.output_dir and not args.seeds:
            hint = f"; continue with: eqspike distill --resume --output-dir {shlex.quote(args.output_dir)}"
        elif args.command == "distill":
            hint = "; continue with the same command and --resume"
        else:
            hint = ""
        print(f"eqspike {args.command}: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
