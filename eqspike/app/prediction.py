"""``eqspike predict``: labels and probabilities from a saved student, run as a spiking network.

A student is found from a run directory (``RUN/student``) or its own folder. Inputs are texts (and
optional second texts, for pair tasks) or a CSV/TSV/JSON/JSON-lines file with a ``sentence1`` (or
``text``) column and an optional ``sentence2`` (or ``text_pair``) column. Each prediction is

    {"label": name, "score": p(label), "probabilities": {name: p, ...}}     (classification)
    {"score": value}                                                       (regression)

with p = softmax(logits) of the student run for T steps (``simulate``; default T: the student's own),
or at its equilibrium (``solve``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from eqspike.data.batches import EncodedSplit
from eqspike.data.evaluation import predict as predict_logits
from eqspike.data.task_files import read_table
from eqspike.data.tasks import DataError, Example
from eqspike.distill.run_directory import RunDirectory
from eqspike.errors import EqspikeError
from eqspike.students import load_student
from eqspike.students.dense_bert import MODEL_TYPE as DENSE_MODEL_TYPE
from eqspike.students.spikelm import MODEL_TYPE as SPIKELM_MODEL_TYPE
from eqspike.teacher.store import load_tokenizer

FIRST_TEXT, SECOND_TEXT = ("sentence1", "text"), ("sentence2", "text_pair")


def check_deployment(student: Any, time_steps: int | None, mode: str) -> None:
    """Refuse by name what a student kind cannot run: SpikeLM at a T other than its own (its scales are
    per time step) or at an equilibrium; the dense student at any T or mode (it has no spikes)."""
    kind = getattr(student.config, "model_type", "")
    T = student.config.time_steps
    if kind == SPIKELM_MODEL_TYPE:
        if time_steps is not None and time_steps != T:
            raise EqspikeError(
                f"this SpikeLM student runs at T = {T} only (its spike scales are learned per time "
                f"step); drop --time-steps {time_steps}"
            )
        if mode != "simulate":
            raise EqspikeError(f"--mode {mode} needs an equilibrium; a SpikeLM student has none (use --mode simulate)")
    elif kind == DENSE_MODEL_TYPE and (time_steps is not None or mode != "simulate"):
        raise EqspikeError("a dense student has no spikes: --time-steps and --mode do not apply to it")


def pairing_warning(config: Any, examples: Sequence[Example]) -> str | None:
    """A warning when the inputs are pairs and the student was trained on single texts, or the reverse."""
    pairs = sum(e.text_b is not None for e in examples)
    if config.text_pairs is False and pairs:
        return (
            f"warning: {pairs} of {len(examples)} inputs are pairs of texts, but this student was trained on "
            f"single texts; they are read as pairs"
        )
    if config.text_pairs and pairs < len(examples):
        return (
            f"warning: {len(examples) - pairs} of {len(examples)} inputs have no second text, but this student "
            f"was trained on pairs of texts"
        )
    return None


@dataclass
class Predictor:
    """A saved student, its tokenizer, and the maximum sequence length its run used."""

    student: Any
    tokenizer: Any
    max_seq_length: int
    device: torch.device

    @classmethod
    def load(cls, path: str | Path, device: torch.device, max_seq_length: int | None = None, **overrides: Any) -> Predictor:
        """From a run directory or a student folder; ``overrides`` replace student config fields."""
        path = Path(path)
        student_dir, settings = path, None
        run = RunDirectory.holding_student(path)
        if run is not None:
            student_dir, settings = run.student, run.saved_settings() if run.started else None
        elif not (path / "config.json").is_file():
            raise EqspikeError(
                f"{path} is neither a run directory (RUN/student/config.json) nor a saved student (config.json)"
                if path.exists()
                else f"{path} does not exist"
            )
        student = load_student(student_dir, **overrides).to(device).eval()
        length = max_seq_length or (settings or {}).get("max_seq_length") or min(512, student.config.max_position_embeddings)
        if length > student.config.max_position_embeddings:
            raise EqspikeError(
                f"--max-seq-length {length} is more than the student's {student.config.max_position_embeddings} positions"
            )
        return cls(student, load_tokenizer(student_dir), int(length), device)

    def __call__(
        self, examples: Sequence[Example], time_steps: int | None = None, mode: str = "simulate", batch_size: int = 32
    ) -> list[dict[str, Any]]:
        """One prediction per example (see the module docstring), in the examples' order."""
        config = self.student.config
        T = time_steps or config.time_steps
        check_deployment(self.student, time_steps, mode)
        split = EncodedSplit(examples, self.tokenizer, self.max_seq_length)
        logits = torch.from_numpy(
            predict_logits(
                lambda b: self.student(**b, mode=mode, time_steps=T).logits,
                split,
                batch_size,
                self.device,
                desc=f"predict (T={T})",
            )
        )
        if config.problem_type == "regression":
            return [{"score": float(value)} for value in logits[:, 0]]
        names = [str(config.id2label.get(i, i)) for i in range(config.num_labels)]
        rows = []
        for p in torch.softmax(logits, dim=-1):
            best = int(p.argmax())
            rows.append(
                {
                    "label": names[best],
                    "score": float(p[best]),
                    "probabilities": {name: round(float(q), 6) for name, q in zip(names, p)},
                }
            )
        return rows


def read_inputs(path: str | Path) -> list[Example]:
    """The texts of a CSV/TSV/JSON/JSON-lines file (column sentence1 or text; optional sentence2 or
    text_pair); refused in one line when a column is missing or a cell is empty."""
    rows = read_table(Path(path))
    columns = list(rows[0])
    first = next((c for c in FIRST_TEXT if c in columns), None)
    if first is None:
        raise DataError(
            f"data file {path} has no text column: expected {' or '.join(FIRST_TEXT)}, found {', '.join(map(str, columns))}"
        )
    second = next((c for c in SECOND_TEXT if c in columns), None)
    empty = [number for number, row in enumerate(rows, start=1) if not str(row.get(first) or "").strip()]
    if empty:
        raise DataError(
            f"data file {path}: {first} is empty in row(s) {', '.join(map(str, empty[:10]))} "
            f"(rows counted from 1, after any header)"
        )
    return [Example(str(row[first]), str(row[second]) if second and row.get(second) is not None else None, 0) for row in rows]
