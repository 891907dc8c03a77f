"""Training-step memory and time of eqspike (spiking simulation forward + implicit backward) against
backprop-through-time over the same simulation, as the number of time steps T grows; plus the
implicit-gradient check against an unrolled float64 reference.

    python benchmarks/bench_equilibrium.py --out results/bench_equilibrium.json

The problem: a stack of spiking populations (affine, LayerNorm- and GELU-fed), width 256, a batch of
16 sequences x 64 tokens. One training step = forward + backward of a fixed linear readout of every
population's rates.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from eqspike.analysis.benchmarking import (
    describe_device,
    peak_memory_mb,
    seconds_per_call,
)
from eqspike.core.checks import (
    StackedSpikingNetwork,
    implicit_gradient_check,
    readout_loss,
)
from eqspike.core.equilibrium import EquilibriumConfig, EquilibriumLayer
from eqspike.core.simulation import simulate


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--time-steps", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=4, help="number of stacked populations")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--feedback", action="store_true", help="add the feedback edge (last -> first population)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (median)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    bad = [t for t in args.time_steps if t < 1]
    if bad:
        p.error(f"--time-steps must be positive integers; got {bad}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    network = StackedSpikingNetwork(args.width, args.depth, feedback=args.feedback, seed=args.seed).to(device)
    x = torch.randn(args.batch, args.tokens, args.width, device=device)
    layer = EquilibriumLayer(EquilibriumConfig(forward="simulate"))

    def ift_step(T: int):
        readout_loss(layer(network.rate_map(x), time_steps=T).rates).backward()

    def bptt_step(T: int):
        readout_loss(simulate(network.rate_map(x), T, differentiable=True).rates).backward()

    def peak_mb(step) -> float:  # gradients are part of the step: zeroed before every call
        return peak_memory_mb(step, device, reset=lambda: network.zero_grad(set_to_none=True))

    print(f"device: {describe_device(device)}")
    print(
        f"problem: {args.depth} populations x width {args.width}, batch {args.batch} x {args.tokens} tokens, "
        f"feedback={'on' if args.feedback else 'off'}"
    )
    results = {"time_steps": [], "ift_peak_mem_mb": [], "bptt_peak_mem_mb": [], "ift_step_s": [], "bptt_step_s": []}
    header = (
        f"{'T':>5} | {'IFT mem MiB':>11} | {'BPTT mem MiB':>12} | {'mem ratio':>9} | {'IFT s/step':>10} | {'BPTT s/step':>11}"
    )
    print(header)
    print("-" * len(header))
    for T in args.time_steps:
        row = (
            peak_mb(lambda: ift_step(T)),
            peak_mb(lambda: bptt_step(T)),
            seconds_per_call(lambda: ift_step(T), repeats=args.repeats, device=device),
            seconds_per_call(lambda: bptt_step(T), repeats=args.repeats, device=device),
        )
        for key, value in zip(list(results)[1:], row):
            results[key].append(round(value, 4))
        results["time_steps"].append(T)
        print(f"{T:>5} | {row[0]:>11.1f} | {row[1]:>12.1f} | {row[1] / row[0]:>8.1f}x | {row[2]:>10.3f} | {row[3]:>11.3f}")
        sys.stdout.flush()

    results["grad_rel_err"] = implicit_gradient_check()
    mem = results["ift_peak_mem_mb"]
    print(f"implicit gradient vs unrolled float64 reference (feedback on): relative error {results['grad_rel_err']:.2e}")
    print(f"IFT peak memory largest/smallest over T: {max(mem) / min(mem):.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
