"""The teacher cache's size per 100k training examples, from the real token lengths of the local tasks,
for the teacher shapes eqspike distils (`--cache-teacher`; `eqspike.teacher.cache.estimated_bytes`):

    bytes = 2 (float16) x [tokens x H x (K + 1) + heads x sum_i L_i^2 x K] + examples x labels x 4

K the distilled layers (one per student block), L_i the tokens of example i. With `--verify` the cache
is also built for one task with the quickstart's MiniLM teacher and its size on disk compared with the
formula. Also: the MNLI projection (393k pairs) at a stated mean length, against the default limit
`teacher_cache_max_gb` (20 GB), above which only the logits are cached and the intermediate stage runs
the teacher live.

    python benchmarks/bench_cache_size.py --out benchmarks/results/bench_cache_size.json [--verify rt_polarity]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from eqspike.teacher.cache import estimated_bytes

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TASKS = ("rt_polarity", "election_tweets_2016", "20newsgroups")
# (name, hidden, heads, teacher layers, student blocks)
SHAPES = (
    ("MiniLM-L6-H384 -> 3 blocks", 384, 12, 6, 3),
    ("base 12 x 768 -> 4 blocks", 768, 12, 12, 4),
    ("base 12 x 768 -> 6 blocks", 768, 12, 12, 6),
)
MNLI_EXAMPLES, MNLI_LABELS = 392_702, 3


def task_lengths(task: str, tokenizer, max_seq_length: int) -> np.ndarray:
    from eqspike.data.batches import EncodedSplit
    from eqspike.data.tasks import load_task_data

    data = load_task_data(train_file=DATA / task / "train.csv", validation_file=DATA / task / "validation.csv")
    return EncodedSplit(data.train, tokenizer, max_seq_length).input_ids.lengths(), data.num_labels


def per_100k(lengths: np.ndarray, hidden: int, heads: int, blocks: int, labels: int) -> tuple[float, float]:
    """(GB with the layers' targets, GB with the logits alone) per 100k examples of these lengths."""
    scale = 100_000 / len(lengths)
    layers = list(range(1, blocks + 1))
    full = estimated_bytes(lengths, hidden, heads, labels, layers, "float16", True) * scale / 1e9
    logits = estimated_bytes(lengths, hidden, heads, labels, layers, "float16", False) * scale / 1e9
    return full, logits


def verify(task: str, tokenizer, max_seq_length: int) -> dict:
    """Build the real cache of the MiniLM teacher (its 6 layers' map for 3 blocks) and weigh it."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from eqspike.data.batches import EncodedSplit
    from eqspike.data.tasks import load_task_data
    from eqspike.teacher.cache import build_or_open
    from eqspike.teacher.store import locate

    data = load_task_data(train_file=DATA / task / "train.csv", validation_file=DATA / task / "validation.csv")
    split = EncodedSplit(data.train, tokenizer, max_seq_length)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        locate("sentence-transformers/all-MiniLM-L6-v2"), num_labels=data.num_labels, attn_implementation="eager"
    ).eval()
    with tempfile.TemporaryDirectory() as root:
        cache = build_or_open(model, split, [2, 4, 6], root, max_gb=100.0, log=lambda *_: None)
        disk = sum(f.stat().st_size for f in cache.folder.iterdir() if f.suffix == ".npy")
    lengths = split.input_ids.lengths()
    formula = estimated_bytes(lengths, 384, 12, data.num_labels, [2, 4, 6], "float16", True)
    return {
        "task": task,
        "examples": len(split),
        "disk_bytes": int(disk),
        "formula_bytes": int(formula),
        "offsets_and_headers_bytes": int(disk - formula),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument(
        "--mnli-mean-length",
        type=float,
        default=40.0,
        help="tokens per MNLI pair assumed for the projection (MNLI is not available offline)",
    )
    p.add_argument("--verify", default=None, help="a task whose real cache is built and weighed")
    args = p.parse_args(argv)
    from transformers import AutoTokenizer

    from eqspike.teacher.store import locate

    tokenizer = AutoTokenizer.from_pretrained(locate("sentence-transformers/all-MiniLM-L6-v2"))
    rows = []
    for task in TASKS:
        lengths, labels = task_lengths(task, tokenizer, args.max_seq_length)
        for shape, hidden, heads, _, blocks in SHAPES:
            full, logits = per_100k(lengths, hidden, heads, blocks, labels)
            rows.append(
                {
                    "task": task,
                    "mean_tokens": float(lengths.mean()),
                    "shape": shape,
                    "gb_per_100k_with_layers": full,
                    "gb_per_100k_logits_only": logits,
                }
            )
    mnli = np.full(MNLI_EXAMPLES, args.mnli_mean_length)
    projection = []
    for shape, hidden, heads, _, blocks in SHAPES:
        full = estimated_bytes(mnli, hidden, heads, MNLI_LABELS, list(range(1, blocks + 1)), "float16", True) / 1e9
        logits = estimated_bytes(mnli, hidden, heads, MNLI_LABELS, list(range(1, blocks + 1)), "float16", False) / 1e9
        projection.append(
            {"shape": shape, "mean_tokens": args.mnli_mean_length, "gb_with_layers": full, "gb_logits_only": logits}
        )
    result = {
        "max_seq_length": args.max_seq_length,
        "rows": rows,
        "mnli": projection,
        "verify": verify(args.verify, tokenizer, args.max_seq_length) if args.verify else None,
    }
    print("| task | mean tokens | teacher -> student | GB per 100k, layers' targets | GB per 100k, logits only |")
    print("|---|---:|---|---:|---:|")
    for r in rows:
        print(
            f"| {r['task']} | {r['mean_tokens']:.1f} | {r['shape']} | {r['gb_per_100k_with_layers']:.1f} | "
            f"{r['gb_per_100k_logits_only'] * 1e3:.2f} MB |"
        )
    print(f"\nMNLI (393k pairs at {args.mnli_mean_length:g} tokens):")
    for r in projection:
        print(
            f"  {r['shape']}: {r['gb_with_layers']:.0f} GB with the layers' targets, "
            f"{r['gb_logits_only'] * 1e3:.1f} MB with the logits alone"
        )
    if result["verify"]:
        v = result["verify"]
        print(
            f"\nverified on {v['task']} ({v['examples']} examples): {v['disk_bytes']:,} bytes on disk, "
            f"{v['formula_bytes']:,} by the formula (+ {v['offsets_and_headers_bytes']:,} bytes of offsets and .npy headers)"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
