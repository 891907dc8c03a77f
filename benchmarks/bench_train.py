"""Training-step time and peak memory of eqspike against ANN fine-tuning, the reference SpikingBERT
scheme and SpikeLM BPTT, on one fixed student shape; and the overhead of the spiking simulation
over the arithmetic it must do.

    python benchmarks/bench_train.py --out results/bench_train.json
    # the bert-base shape: a 12 x 768 teacher, a 4 x 768 student (and --hidden 384 --heads 6
    # --intermediate 1536 --teacher-hidden 768 --teacher-heads 12 --teacher-intermediate 3072 for 4 x 384)
    python benchmarks/bench_train.py --hidden 768 --heads 12 --intermediate 3072 --seq 128 --batch 32 \
        --teacher-layers 12 --methods ann eqspike_solve_T eqspike_simulate_T spikelm_bptt --no-inference \
        --out results/bench_train_base_768.json

Shape: 4 blocks, hidden 384, 12 heads, FFN 1536, sequences of 64 tokens, batch 16 (random weights
and tokens; the cost does not depend on the values). One training step = forward + task loss
(cross-entropy on the logits) + backward, measured the same way for every method:
  (a) ann              BERT of the same shape (transformers), fine-tuning step
  (b) eqspike_solve    eqspike student, equilibrium solved directly (one sweep), implicit backward
  (b') eqspike_solve_T  the same student trained for deployment at T = 4 (--aware-steps): the rate map
                       applies the 4-step quantizer with straight-through gradients, thresholds trained
  (b'') eqspike_simulate_T  the T-aware student as trained by default (train_forward: simulate): a no-grad
                       4-step spiking simulation, then the implicit gradient at its rates (anchored sweep)
  (c) eqspike_simulate eqspike student, spiking simulation for T = 32, implicit backward
  (d) reference        SpikingBERT's scheme (docs/design.md §12): a no-grad simulation for
                       T = 100, then one surrogate pass per distilled quantity, each from the
                       embedding (5 hidden states + 4 attention maps), backward through them
  (e) spikelm_bptt     the SpikeLM baseline, backprop through time at T = 4
Inference: examples per second of the simulation at T = 8, 32, 128, against T times one rate-map
sweep (the arithmetic the simulation must do at least): overhead = simulation time / time of T sweeps,
timed alternately (--inference-repeats pairs after one warm-up each; the median of the pair ratios).
The simulation does not count spikes here (``count_spikes=False``: inference needs no energy tally).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.nn import functional as F

from eqspike.analysis.benchmarking import (
    describe_device,
    paired_seconds,
    peak_memory_mb,
    seconds_per_call,
)
from eqspike.core.simulation import simulate
from eqspike.students.spikelm import SpikeLMForSequenceClassification
from eqspike.students.spiking_bert import SpikingBertForSequenceClassification
from eqspike.students.spiking_bert_config import SpikingBertConfig


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=384)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--intermediate", type=int, default=1536)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--simulate-steps", type=int, default=32)
    p.add_argument("--aware-steps", type=int, default=4, help="the deployment T of the T-aware student (b')")
    p.add_argument("--reference-steps", type=int, default=100)
    p.add_argument("--spikelm-steps", type=int, default=4)
    p.add_argument("--inference-steps", type=int, nargs="+", default=[8, 32, 128])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--inference-repeats", type=int, default=5, help="alternating simulation / sweeps pairs per T")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--methods",
        nargs="+",
        default=list(METHODS),
        choices=METHODS,
        help="the rows to measure (the reference and T = 32 simulation are slow at base size)",
    )
    p.add_argument(
        "--teacher-layers",
        type=int,
        default=None,
        help="also time a fine-tuning step of the teacher: a BERT of this depth (row teacher_ann)",
    )
    p.add_argument("--teacher-hidden", type=int, default=None, help="the teacher's width (default: the student's)")
    p.add_argument("--teacher-heads", type=int, default=None)
    p.add_argument("--teacher-intermediate", type=int, default=None)
    p.add_argument("--no-inference", action="store_true", help="skip the inference overhead measurement")
    return p.parse_args(argv)


METHODS = ("ann", "eqspike_solve", "eqspike_solve_T", "eqspike_simulate_T", "eqspike_simulate", "reference", "spikelm_bptt")


def sweeps(rate_map, times: int) -> None:
    """``times`` rate-map sweeps, keeping none of their results (as the simulation keeps none)."""
    for _ in range(times):
        rate_map.sweep()


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    shape = dict(
        vocab_size=30522,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=args.intermediate,
        num_labels=2,
    )
    ids = torch.randint(1000, 30000, (args.batch, args.seq), device=device)
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 2, (args.batch,), device=device)

    from transformers import BertConfig, BertForSequenceClassification

    ann = (
        BertForSequenceClassification(
            BertConfig(**shape, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="eager")
        )
        .to(device)
        .train()
    )
    student = SpikingBertForSequenceClassification(SpikingBertConfig(**shape)).to(device).train()
    student.calibrate_thresholds([{"input_ids": ids, "attention_mask": mask}])
    aware = (
        SpikingBertForSequenceClassification(SpikingBertConfig(**shape, time_steps=args.aware_steps, quantize_rates=True))
        .to(device)
        .train()
    )
    aware.calibrate_thresholds([{"input_ids": ids, "attention_mask": mask}], time_steps=args.aware_steps)
    aware.train_thresholds(True)
    spikelm = SpikeLMForSequenceClassification.from_teacher(ann, args.layers, time_steps=args.spikelm_steps).to(device).train()
    teacher = None
    if args.teacher_layers:
        teacher_shape = dict(
            shape,
            num_hidden_layers=args.teacher_layers,
            hidden_size=args.teacher_hidden or args.hidden,
            num_attention_heads=args.teacher_heads or args.heads,
            intermediate_size=args.teacher_intermediate or args.intermediate,
        )
        teacher = (
            BertForSequenceClassification(
                BertConfig(
                    **teacher_shape, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="eager"
                )
            )
            .to(device)
            .train()
        )

    def teacher_step():
        F.cross_entropy(teacher(input_ids=ids, attention_mask=mask).logits, labels).backward()

    def ann_step():
        F.cross_entropy(ann(input_ids=ids, attention_mask=mask).logits, labels).backward()

    def eqspike_step(mode: str, T: int | None = None):
        F.cross_entropy(student(ids, mask, mode=mode, time_steps=T).logits, labels).backward()

    def aware_step(mode: str = "solve"):
        F.cross_entropy(aware(ids, mask, mode=mode).logits, labels).backward()

    def reference_step():
        rate_map = student.rate_map(ids, mask, torch.zeros_like(ids))
        with torch.no_grad():
            simulate(rate_map, args.reference_steps)
        targets = ["embeddings"] + [f"block{m}.output" for m in range(args.layers)]
        targets += [f"block{m}.key" for m in range(args.layers)]  # the attention maps need each block's K
        total = 0.0
        for name in targets:  # each surrogate pass starts again from the embedding
            total = total + rate_map.sweep_until(name)[name].sum()
        total.backward()

    def spikelm_step():
        F.cross_entropy(spikelm(ids, mask).logits, labels).backward()

    methods = {
        "teacher_ann": (teacher_step, teacher),
        "ann": (ann_step, ann),
        "eqspike_solve": (lambda: eqspike_step("solve"), student),
        "eqspike_solve_T": (aware_step, aware),
        "eqspike_simulate_T": (lambda: aware_step("simulate"), aware),
        "eqspike_simulate": (lambda: eqspike_step("simulate", args.simulate_steps), student),
        "reference": (reference_step, student),
        "spikelm_bptt": (spikelm_step, spikelm),
    }
    print(f"device: {describe_device(device)}")
    print(
        f"shape: {args.layers} blocks, hidden {args.hidden}, {args.heads} heads, FFN {args.intermediate}, "
        f"batch {args.batch} x {args.seq} tokens"
    )
    rows = []
    chosen = [name for name in methods if name in args.methods or (name == "teacher_ann" and teacher is not None)]
    for name, (step, model) in ((name, methods[name]) for name in chosen):
        memory = peak_memory_mb(step, device, reset=lambda: model.zero_grad(set_to_none=True))
        seconds = seconds_per_call(lambda: (model.zero_grad(set_to_none=True), step()), repeats=args.repeats, device=device)
        rows.append({"method": name, "step_s": round(seconds, 4), "peak_mem_mb": round(memory, 1)})
    base = next((r for r in rows if r["method"] == "ann"), rows[0])
    print(f"{'method':<20}{'s/step':>9}{'x ann':>8}{'peak MiB':>10}{'x ann':>8}")
    for r in rows:
        print(
            f"{r['method']:<20}{r['step_s']:>9.3f}{r['step_s'] / base['step_s']:>8.2f}"
            f"{r['peak_mem_mb']:>10.1f}{r['peak_mem_mb'] / base['peak_mem_mb']:>8.2f}"
        )
    by_name = {r["method"]: r for r in rows}
    if "reference" in by_name and "eqspike_solve" in by_name:
        print(
            f"eqspike (solve) is {by_name['reference']['step_s'] / by_name['eqspike_solve']['step_s']:.1f}x faster "
            f"than the reference scheme"
        )
    student.eval()
    inference = []
    with torch.no_grad():
        rate_map = student.rate_map(ids, mask, torch.zeros_like(ids))
        for T in [] if args.no_inference else args.inference_steps:
            sim_s, sweeps_s, overhead = paired_seconds(
                lambda: simulate(rate_map, T, count_spikes=False),
                lambda: sweeps(rate_map, T),
                repeats=args.inference_repeats,
                device=device,
            )
            inference.append(
                {
                    "time_steps": T,
                    "examples_per_s": round(args.batch / sim_s, 3),
                    "sweep_ms": round(1000 * sweeps_s / T, 2),
                    "overhead": round(overhead, 3),
                }
            )
    if inference:
        print(
            "inference: "
            + ", ".join(
                f"T={r['time_steps']} {r['examples_per_s']:.2f} ex/s overhead {r['overhead']:.2f}x (sweep {r['sweep_ms']:.1f} ms)"
                for r in inference
            )
        )
    result = {
        "rows": rows,
        "inference": inference,
        "device": describe_device(device),
        "shape": vars(args) | {"out": str(args.out)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
