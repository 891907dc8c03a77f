"""The argument parsers of every ``eqspike`` command (the settings' flags come from ``RunConfig``)."""

from __future__ import annotations

import argparse

from eqspike.app.commands import cmd_compare, cmd_distill, cmd_selfcheck, cmd_teacher
from eqspike.app.trained import cmd_diagnose, cmd_energy, cmd_evaluate, cmd_predict
from eqspike.distill.flags import add_config_arguments
from eqspike.errors import float_within, int_at_least
from eqspike.version import __version__


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad argument reported on one line (and where to look) instead of the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


SHORT_USAGE = "%(prog)s [--config FILE] [--SETTING VALUE ...]"


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
    check.set_defaults(run=cmd_selfcheck)


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
