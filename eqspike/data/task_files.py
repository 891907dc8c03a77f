"""A task from the user's files: CSV, TSV, JSON (a list of objects) or JSON lines with the columns
sentence1, optional sentence2 and label. The label type is given or inferred; bad files are refused
by name and line.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from eqspike.data.task_data import DataError, Example, TaskData


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
    cells stay text here (``load_files`` reads the labels)."""
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


def load_files(train_path: Path, validation_path: Path, name: str, label_type: str = "auto") -> TaskData:
    """A task from a training and a dev file (columns sentence1, optional sentence2, label): the label type
    (``label_type``, or inferred), the classes in order, and the examples; a bad file refused by name and line."""
    tables = {"train": read_table(train_path), "validation": read_table(validation_path)}
    for split, path in (("train", train_path), ("validation", validation_path)):
        _check_columns(tables[split], path)
    kind, numbers, note = _label_type(tables, {"train": train_path, "validation": validation_path}, label_type)
    label_names, labels, to_label = _classes(kind, numbers, tables, train_path, validation_path)

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


def _check_columns(rows: list[dict[str, Any]], path: Path) -> None:
    """Refuse a file without the columns sentence1 and label, or with empty cells in them (or in
    sentence2, unless every row leaves it empty: a single-text task)."""
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


def _classes(
    kind: str,
    numbers: dict[str, list[Any]],
    tables: dict[str, list[dict[str, Any]]],
    train_path: Path,
    validation_path: Path,
) -> tuple[list[str] | None, dict[str, list[str]] | None, Any]:
    """The label names (None for regression; whole numbers in numeric order, else the training labels
    sorted), each split's labels as those names, and for regression the function that reads a score.
    Refused: a single class, or dev labels that never occur in training."""
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
    return label_names, labels, to_label


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())
