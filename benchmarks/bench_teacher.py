"""Teacher fine-tuning: eqspike's recipes against a plain transformers loop, per task.

    python benchmarks/bench_teacher.py --out results/bench_teacher.json

The student is measured relative to its teacher, so a weak teacher hides a weak student. Every recipe
fine-tunes the same pretrained BERT (default: MiniLM-L6-H384, the quickstart's) on the same data with
the same maximum length, and reports the dev metric:

  plain          AdamW (lr 5e-5, torch's default weight decay), constant rate, batch 32, 3 epochs, no
                 clipping; the score after the last epoch (what a short hand-written loop gives);
  linear-3       eqspike 0.1's recipe: warm-up over 10 % of the steps, then linear decay to 0, 3 epochs,
                 the best dev epoch kept;
  constant-10-warmup  warm-up over 10 % of the steps, then a constant rate, at most 10 epochs, stopped
                 after 2 epochs without a better dev score, the best dev epoch kept;
  default        eqspike's default (RunConfig): the plain loop's constant rate from the first step (with
                 gradient clipping at 1.0), at most 10 epochs, stopped after 2 epochs without a better dev
                 score, the best dev epoch kept.

Tasks: the built-in ``fortunes`` and the CSV tasks under ``--data-root`` (``../shared/data`` by
default: election_tweets_2016, 20newsgroups). Large tasks are subsampled at random (seeded) with
--max-train / --max-eval.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from eqspike.analysis.benchmarking import describe_device
from eqspike.data.batches import EncodedSplit, batch_order, iterate_batches
from eqspike.data.evaluation import evaluate
from eqspike.data.tasks import load_task_data
from eqspike.distill.config import RunConfig
from eqspike.distill.prepare import subsample
from eqspike.runtime.devices import set_seed
from eqspike.teacher.base import Teacher
from eqspike.teacher.fine_tune import fine_tune
from eqspike.teacher.store import _load_model, load_tokenizer, locate

RECIPES = {
    "linear-3": dict(teacher_epochs=3, teacher_schedule="linear", teacher_warmup_ratio=0.1, teacher_patience=0),
    "constant-10-warmup": dict(teacher_epochs=10, teacher_schedule="constant", teacher_warmup_ratio=0.1, teacher_patience=2),
    "default": {},  # RunConfig's defaults: constant rate, no warm-up, at most 10 epochs, patience 2
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--teacher", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--tasks", nargs="+", default=["fortunes", "election_tweets_2016", "20newsgroups"])
    p.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--recipes", nargs="+", default=["plain", "linear-3", "default"], choices=["plain", *RECIPES])
    p.add_argument("--max-seq-length", type=int, default=64)
    p.add_argument("--max-train", type=int, default=4000, help="subsample larger training sets (seeded)")
    p.add_argument("--max-eval", type=int, default=2000, help="subsample larger dev sets (seeded)")
    p.add_argument("--seed", type=int, default=42, help="seed of the subsamples")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[42],
        help="training seeds: each recipe runs once per seed (head init, data order); mean and spread reported",
    )
    return p.parse_args(argv)


def plain_loop(source: str, task, train: EncodedSplit, splits, device, seed: int, epochs: int = 3) -> dict:
    """The hand-written baseline: AdamW 5e-5, constant, batch 32, no clipping, last epoch's score."""
    set_seed(seed)
    model = _load_model(source, num_labels=task.num_labels).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    history = []
    for epoch in range(epochs):
        model.train()
        for batch in iterate_batches(train, batch_order(len(train), 32, seed, epoch)):
            batch.pop("index")
            model(**{k: v.to(device) for k, v in batch.items()}).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        model.eval()
        history.append(evaluate(lambda b: model(**b).logits, task, splits, 64, device)[task.metric])
    return {"score": history[-1], "best": max(history), "history": history, "epochs": epochs}


def run_recipe(
    recipe: str, seed: int, source: str, tokenizer, task, name: str, train: EncodedSplit, splits, device, args: argparse.Namespace
) -> dict:
    """One fine-tuning of ``recipe`` with training seed ``seed`` (set before the model is loaded: the new
    classifier head's init depends on it)."""
    started = time.time()
    if recipe == "plain":
        result = plain_loop(source, task, train, splits, device, seed)
    else:
        config = RunConfig(
            teacher=args.teacher, max_seq_length=args.max_seq_length, seed=seed, device=device.type, **RECIPES[recipe]
        )
        set_seed(seed)
        model = _load_model(source, num_labels=task.num_labels)
        with tempfile.TemporaryDirectory() as store:
            tuned = fine_tune(
                Teacher(model, tokenizer, source, {}),
                config.teacher_spec(),
                task,
                train,
                splits,
                device,
                Path(store) / "teacher",
                log=lambda *_: None,
            )
        card = tuned.card
        result = {
            "score": card["dev_score"],
            "best": card["dev_score"],
            "history": [h[task.metric] for h in card["history"]],
            "epochs": len(card["history"]),
        }
    result.update(task=name, recipe=recipe, seed=seed, metric=task.metric, seconds=round(time.time() - started, 1))
    print(
        f"  {recipe:<12} seed {seed} {task.metric} {result['score']:.4f} after {result['epochs']} epochs "
        f"({result['seconds']:.0f} s); per epoch: " + ", ".join(f"{h:.3f}" for h in result["history"]),
        flush=True,
    )
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    source = locate(args.teacher)
    tokenizer = load_tokenizer(source)
    rows = []
    for name in args.tasks:
        if name == "fortunes":
            task = load_task_data("fortunes")
        else:
            folder = args.data_root / name
            task = load_task_data(train_file=folder / "train.csv", validation_file=folder / "validation.csv", task=name)
        task.train = subsample(task.train, args.max_train, args.seed)
        task.validation = {k: subsample(v, args.max_eval, args.seed) for k, v in task.validation.items()}
        train = EncodedSplit(task.train, tokenizer, args.max_seq_length)
        splits = {k: EncodedSplit(v, tokenizer, args.max_seq_length) for k, v in task.validation.items()}
        print(f"{name}: {len(train)} train / {sum(map(len, splits.values()))} dev, {task.num_labels} labels", flush=True)
        for recipe in args.recipes:
            for seed in args.seeds:
                rows.append(run_recipe(recipe, seed, source, tokenizer, task, name, train, splits, device, args))
                write_result(args, rows, device)  # after every run: a long benchmark stopped early keeps its rows
    print("\n| task | " + " | ".join(args.recipes) + " |")
    print("|---|" + "---:|" * len(args.recipes))
    for name in args.tasks:
        cells = []
        for recipe in args.recipes:
            scores = [r["score"] for r in rows if r["task"] == name and r["recipe"] == recipe]
            spread = f" +- {statistics.stdev(scores):.4f}" if len(scores) > 1 else ""
            cells.append(f"{statistics.mean(scores):.4f}{spread}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    result = write_result(args, rows, device)
    print(f"wrote {args.out}")
    return result


def write_result(args: argparse.Namespace, rows: list[dict], device: torch.device) -> dict:
    result = {"rows": rows, "device": describe_device(device), "settings": {k: str(v) for k, v in vars(args).items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
