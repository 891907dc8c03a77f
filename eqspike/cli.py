"""The ``eqspike`` command line. Thin: it parses arguments and calls library code."""

from __future__ import annotations

import argparse
import sys

import torch

import eqspike


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
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
