"""The ``eqspike`` command line. Thin: it parses arguments, builds a RunConfig, calls library code."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import eqspike
from eqspike.validation import EqspikeError


def _log(message: str) -> None:
    print(message, flush=True)


def cmd_teacher(args: argparse.Namespace) -> int:
    """Fine-tune (or find) the teacher for a task and report its dev score."""
    from eqspike.config import config_from_args
    from eqspike.distillation import prepare_data
    from eqspike.teacher import load_teacher
    from eqspike.training import resolve_device

    config = config_from_args(args)
    data = prepare_data(config, _log)
    teacher = load_teacher(config, data.task, resolve_device(config.device), data.splits, data.train, _log)
    score = teacher.card.get("dev_score")
    _log(f"teacher {teacher.path}: task {data.task.name}, dev {data.task.metric} "
         + (f"{score:.4f}" if score is not None else "not measured (provided checkpoint)"))
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    """Distil a spiking student from the teacher and evaluate it as a spiking network."""
    from eqspike.config import config_from_args, load_yaml
    from eqspike.distillation import Distiller

    fixed = {}
    if args.resume and args.output_dir and (Path(args.output_dir) / "config.yaml").is_file() and not args.config:
        # A resumed run continues with the settings it was started with; flags given now still override.
        saved = load_yaml(Path(args.output_dir) / "config.yaml")
        # max_steps time-boxed the earlier invocation; it does not carry over.
        fixed = {k: v for k, v in saved.items()
                 if getattr(args, k, None) is None and k not in ("resume", "overwrite", "max_steps")}
    config = config_from_args(args, **fixed)
    Distiller(config, _log).run()
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Accuracy of a trained student as a spiking network at each T."""
    from eqspike.config import load_yaml, RunConfig
    from eqspike.distillation import STUDENT, prepare_data
    from eqspike.evaluation import evaluate
    from eqspike.model import SpikingBertForSequenceClassification
    from eqspike.training import resolve_device

    run_dir = Path(args.run_dir)
    if not (run_dir / STUDENT / "config.json").is_file() or not (run_dir / "config.yaml").is_file():
        raise EqspikeError(f"{run_dir} is not an eqspike run directory (expected {STUDENT}/config.json and config.yaml)")
    bad = [t for t in args.time_steps if t < 1]
    if bad:
        raise EqspikeError(f"--time-steps must be positive integers; got {bad}")
    config = RunConfig(**load_yaml(run_dir / "config.yaml"))
    if args.max_eval_examples:
        config = config.replace(max_eval_examples=args.max_eval_examples)
    device = resolve_device(args.device or config.device)
    data = prepare_data(config.replace(max_train_examples=1), _log)
    student = SpikingBertForSequenceClassification.from_pretrained(run_dir / STUDENT).to(device)
    rows = []
    for T in args.time_steps:
        metrics = evaluate(lambda b: student(**b, mode="simulate", time_steps=T).logits, data.task, data.splits,
                           config.eval_batch_size, device, f"spiking T={T}")
        rows.append({"time_steps": T, "score": metrics[data.task.metric], "metrics": metrics})
        _log(f"T={T:<4d} {data.task.metric} {metrics[data.task.metric]:.4f}")
    out = run_dir / "evaluate.json"
    out.write_text(json.dumps({"task": data.task.name, "metric": data.task.metric, "rows": rows}, indent=2) + "\n")
    _log(f"wrote {out}")
    return 0


def selfcheck(args: argparse.Namespace) -> int:
    """Check this installation's core on this device: the IF rate bound, implicit gradients against
    an unrolled reference, and convergence of spike rates to the equilibrium."""
    from eqspike.equilibrium import EquilibriumConfig, EquilibriumLayer, simulate
    from eqspike.examples import StackedSpikingNetwork, implicit_gradient_check
    from eqspike.neurons import NeuronConfig, equilibrium_rate, simulate_constant_current

    generator = torch.Generator().manual_seed(args.seed)
    rows: list[tuple[str, str, bool]] = []

    current = torch.empty(10_000).uniform_(-2, 2, generator=generator)
    for signed in (True, False):
        neuron = NeuronConfig(signed=signed)
        error = (simulate_constant_current(current, 32, neuron).rates - equilibrium_rate(current, neuron)).abs().max().item()
        rows.append((f"IF rate bound, {'signed' if signed else 'unsigned'}, T=32", f"max error {error:.4f} < 1/32", error < 1 / 32))

    for solver in ("anderson", "broyden", "fixed_point_iter"):
        error = implicit_gradient_check(solver=solver, seed=args.seed)
        rows.append((f"implicit gradient, {solver}", f"relative error {error:.1e} < 1e-4", error < 1e-4))

    network = StackedSpikingNetwork(64, 4, feedback=True, feedback_gain=0.3, seed=args.seed)
    x = torch.randn(4, 16, 64, generator=generator)
    with torch.no_grad():
        rate_map = network.rate_map(x)
        star = EquilibriumLayer(EquilibriumConfig(tol=1e-6, max_iter=100))(rate_map).rates
        error = {T: max((r - star[k]).abs().mean().item() for k, r in simulate(rate_map, T).rates.items()) for T in (8, 64)}
    rows.append(("spike rates -> equilibrium", f"worst population error T=8 {error[8]:.4f}, T=64 {error[64]:.4f}", error[64] < 0.25 * error[8]))

    width = max(len(r[0]) for r in rows)
    for name, detail, ok in rows:
        print(f"{'PASS' if ok else 'FAIL'}  {name:<{width}}  {detail}")
    failed = sum(not ok for _, _, ok in rows)
    print(f"{len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eqspike",
        description="Spiking BERT students by equilibrium-based ANN-to-SNN distillation.",
    )
    parser.add_argument("--version", action="version", version=f"eqspike {eqspike.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    from eqspike.config import add_config_arguments

    teacher = commands.add_parser("teacher", help="fine-tune (or find) the teacher for a task")
    add_config_arguments(teacher)
    teacher.set_defaults(run=cmd_teacher)
    distill = commands.add_parser("distill", help="distil a spiking student from a teacher")
    add_config_arguments(distill)
    distill.set_defaults(run=cmd_distill)
    evaluate = commands.add_parser("evaluate", help="score a trained student as a spiking network at several T")
    evaluate.add_argument("run_dir", help="a run directory written by `eqspike distill`")
    evaluate.add_argument("--time-steps", type=int, nargs="+", default=[8, 16, 32, 64])
    evaluate.add_argument("--max-eval-examples", type=int, default=None)
    evaluate.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    evaluate.set_defaults(run=cmd_evaluate)
    check = commands.add_parser("selfcheck", help="check the spiking equilibrium core on this machine")
    check.add_argument("--seed", type=int, default=0)
    check.set_defaults(run=selfcheck)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except EqspikeError as error:
        print(f"eqspike {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"eqspike {args.command}: interrupted; a distill run continues with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
