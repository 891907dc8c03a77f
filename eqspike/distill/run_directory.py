"""The run directory: one owner for the files of a distillation run and the rules for them.

    RUN/.eqspike-run    the marker of a run eqspike made (only such a folder is cleared by ``overwrite``)
    RUN/config.yaml     the resolved settings (a resumed run reads them back)
    RUN/metrics.jsonl   one line per logged step and per dev evaluation
    RUN/metrics.json    the final result (written last: its presence means the run finished)
    RUN/checkpoint/     student.pt, optimizer.pt and state.json (written last) of the last step saved
    RUN/student/        the best student so far, a transformers from_pretrained folder, with its model
                        card (README.md, written last; rewritten with the final scores)
    RUN/evaluate.json   every ``eqspike evaluate``'s scores (appended), added to the model card
    RUN/tensorboard/    the metrics.jsonl scalars as TensorBoard events (``report_to="tensorboard"``)

Every write replaces a file or folder in one rename (``eqspike.runtime.files``), so a crash leaves
the previous version or the new one; ``claim(resume=True)`` repairs what a crash between two renames
left. An existing run is never overwritten without ``overwrite``, and ``overwrite`` clears only a folder
that holds eqspike's marker (or, for runs from before the marker, nothing but a run's files). How a run
claims, resumes and starts its directory is the ``RunStart`` half, inherited from
``eqspike.distill.run_start``. Only the process that ``writes`` (rank 0 under torchrun) touches the disk.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import torch

from eqspike.distill.config import RunConfig
from eqspike.distill.run_start import CHECKPOINT, INVOCATION, MARKER, STATE, STUDENT, RunDirectoryError, RunStart
from eqspike.distill.yaml_io import load_yaml, save_yaml
from eqspike.runtime.files import atomic_directory, write_atomic
from eqspike.runtime.reporting import open_report
from eqspike.students import STUDENTS, load_student, load_student_config
from eqspike.students.model_card import model_card, write_model_card
from eqspike.teacher.store import load_tokenizer, teacher_name

# What eqspike writes into a run directory (a folder of nothing else, with config.yaml, is a run from
# before the marker).
RUN_FILES = {
    MARKER,
    "config.yaml",
    "metrics.jsonl",
    "metrics.json",
    CHECKPOINT,
    STUDENT,
    "evaluate.json",
    "tensorboard",
    "diagnostics",
    "attribution",
}


def _is_run_file(name: str) -> bool:
    """One of RUN_FILES, or what an interrupted atomic write of one leaves (``.NAME.*``)."""
    return name in RUN_FILES or any(name.startswith(f".{known}.") for known in RUN_FILES)


class RunDirectory(RunStart):
    """The files of one run under ``root`` (see the module docstring)."""

    @staticmethod
    def root_for(config: RunConfig) -> Path:
        """A run's folder: ``output_dir``, or runs/TASK-TEACHER-L<blocks>-<the kind's run name>."""
        if config.output_dir:
            return Path(config.output_dir)
        teacher = teacher_name(config.teacher) if config.teacher else "teacher"
        task = config.task or (Path(config.train_file).resolve().parent.name if config.train_file else "data")
        layers = config.student_layers or "all"
        return Path("runs") / f"{task}-{teacher}-L{layers}-{STUDENTS[config.student_type].run_name(config)}"

    @property
    def diagnostics(self) -> Path:
        """Where `eqspike diagnose` writes its report by default."""
        return self.root / "diagnostics"

    def __init__(self, root: str | Path, writes: bool = True, command: str | None = None, report_to: str = "none") -> None:
        self.root = Path(root)
        self.writes = writes
        self.command = command  # the command line that made the run (for the model card)
        self.report_to = report_to
        self._report = None  # opened with the first record (RUN/tensorboard)
        self.settings = self.root / "config.yaml"
        self.log_file = self.root / "metrics.jsonl"
        self.result_file = self.root / "metrics.json"
        self.checkpoint = self.root / CHECKPOINT
        self.student = self.root / STUDENT

    # ------------------------------------------------------------------ what is there
    @property
    def finished(self) -> bool:
        return self.result_file.is_file() and (self.student / "config.json").is_file()

    @property
    def has_checkpoint(self) -> bool:
        return (self.checkpoint / STATE).is_file()

    @property
    def started(self) -> bool:
        """A run was started here (its settings are written before its first step)."""
        return self.settings.is_file()

    @property
    def is_own_run(self) -> bool:
        """A folder eqspike made for a run: its marker, or (before markers) a run's files and nothing else."""
        if (self.root / MARKER).is_file():
            return True
        names = {entry.name for entry in self.root.iterdir()} if self.root.is_dir() else set()
        return self.settings.name in names and all(_is_run_file(name) for name in names)

    def require_student(self) -> None:
        """Refuse a folder that is not a run directory with a student (evaluate, diagnose)."""
        if not (self.student / "config.json").is_file() or not self.settings.is_file():
            raise RunDirectoryError(
                f"{self.root} is not an eqspike run directory (expected {STUDENT}/config.json and config.yaml)"
            )

    def saved_settings(self) -> dict[str, Any]:
        """config.yaml's settings, as RunConfig fields."""
        return load_yaml(self.settings)

    def saved_config(self) -> RunConfig:
        """The run's resolved settings, as saved in config.yaml."""
        return RunConfig(**self.saved_settings())

    def load_student(self, device: torch.device | str = "cpu", **overrides: Any) -> torch.nn.Module:
        """The saved student (``overrides`` replace its config fields), on ``device``."""
        return load_student(self.student, **overrides).to(device)

    def load_tokenizer(self):
        """The tokenizer saved with the student (its teacher's)."""
        return load_tokenizer(self.student)

    @classmethod
    def holding_student(cls, path: str | Path) -> RunDirectory | None:
        """The run directory ``path`` names when it holds a saved student (RUN/student/config.json), else None."""
        run = cls(path, writes=False)
        return run if (run.student / "config.json").is_file() else None

    def settings_differ(self, config: RunConfig, ignore: tuple[str, ...] = INVOCATION) -> list[str]:
        """The settings in which the saved config.yaml differs from ``config``, leaving out ``ignore`` (by
        default those that only say how a run is invoked: output_dir, overwrite, resume, max_steps)."""
        saved, now = self.saved_settings(), config.to_dict()
        return sorted(k for k in now if k not in ignore and saved.get(k, now[k]) != now[k])

    def save_settings(self, config: RunConfig) -> None:
        """config.yaml: the resolved settings."""
        if self.writes:
            save_yaml(config, self.settings)

    def result(self) -> dict[str, Any] | None:
        return json.loads(self.result_file.read_text()) if self.result_file.is_file() else None

    # ------------------------------------------------------------------ starting (and ``RunStart``)
    def discard_log(self) -> None:
        """Forget the log of a run that stopped before its first checkpoint (it starts again)."""
        if self.writes:
            self.log_file.unlink(missing_ok=True)

    # ------------------------------------------------------------------ during the run
    def log(self, record: dict[str, Any]) -> None:
        """A line of metrics.jsonl (and the same scalars for ``report_to``)."""
        if self.writes:
            with self.log_file.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            if self._report is None and self.report_to != "none":
                self._report = open_report(self.report_to, self.root / "tensorboard")
            if self._report is not None:
                self._report.write(record)

    def close(self) -> None:
        if self._report is not None:
            self._report.close()
            self._report = None

    def log_records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_file.read_text().splitlines()] if self.log_file.is_file() else []

    def save_checkpoint(self, student_state: dict[str, Any], optimizer_state: dict[str, Any], state: dict[str, Any]) -> None:
        if not self.writes:
            return
        with atomic_directory(self.checkpoint) as staging:
            torch.save(student_state, staging / "student.pt")
            torch.save(optimizer_state, staging / "optimizer.pt")
            (staging / STATE).write_text(json.dumps(state, indent=2) + "\n")

    def load_checkpoint(self, name: str, device: torch.device) -> dict[str, Any]:
        """``student.pt`` or ``optimizer.pt``, refused by name when unreadable or not finite."""
        path = self.checkpoint / name
        try:
            data = torch.load(path, map_location=device)
        except Exception as error:  # a truncated or corrupted file: pickle, zip and EOF errors alike
            raise RunDirectoryError(
                f"cannot resume: {path} is corrupted ({type(error).__name__}: "
                f"{str(error).splitlines()[0][:120] if str(error) else 'unreadable'}); start the run "
                f"again with --overwrite"
            ) from None
        bad = [
            key
            for key, value in data.items()
            if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all()
        ]
        if bad:
            raise RunDirectoryError(
                f"cannot resume: {path} holds non-finite weights ({', '.join(bad[:3])}); start the run again with --overwrite"
            )
        return data

    def checkpoint_step(self) -> int | None:
        state_file = self.checkpoint / STATE
        return json.loads(state_file.read_text())["global_step"] if state_file.is_file() else None

    def save_student(self, student, tokenizer, best: dict[str, Any] | None = None) -> None:
        """The student (transformers' save_pretrained), its tokenizer, and its model card last; ``best``:
        the dev evaluation that selected it (step, score), for the card until the run finishes."""
        if self.writes:
            with atomic_directory(self.student) as staging:
                student.save_pretrained(staging)
                tokenizer.save_pretrained(str(staging))
                write_model_card(staging, model_card(student.config, best=best, command=self.command))

    def write_result(self, result: dict[str, Any]) -> None:
        """metrics.json, and the student's model card with the final scores."""
        if self.writes:
            write_atomic(self.result_file, json.dumps(result, indent=2) + "\n")
            self.update_card()
            self.close()

    def add_evaluation(self, task: str, metric: str, rows: list[dict[str, Any]]) -> tuple[Path, int]:
        """Append ``rows`` (scores of ``eqspike evaluate``) to evaluate.json, the history of every evaluation,
        and to the model card; returns the file and the number of rows it now holds."""
        path = self.root / "evaluate.json"
        history = json.loads(path.read_text()).get("rows", []) if path.is_file() else []
        record = {"task": task, "metric": metric, "rows": history + rows}
        write_atomic(path, json.dumps(record, indent=2) + "\n")
        self.update_card()
        return path, len(record["rows"])

    def write_predictions(self, time_steps: int, rows: list[dict[str, Any]]) -> Path:
        """RUN/predictions/T{time_steps}.csv: one row per dev example scored (split, example: its place
        in the split as scored, label, prediction, correct), for error analysis and for the flips over
        seeds (``eqspike.analysis.seeds.example_flips``); an earlier file for this T is replaced."""
        folder = self.root / "predictions"
        folder.mkdir(exist_ok=True)
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=["split", "example", "label", "prediction", "correct"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        path = folder / f"T{time_steps}.csv"
        write_atomic(path, text.getvalue())
        return path

    def update_card(self) -> None:
        """Rewrite student/README.md from metrics.json and evaluate.json."""
        if not (self.student / "config.json").is_file():
            return
        config = load_student_config(self.student)
        evaluation = self.root / "evaluate.json"
        rows = json.loads(evaluation.read_text()).get("rows", []) if evaluation.is_file() else []
        result = self.result()
        write_model_card(self.student, model_card(config, result, rows, command=(result or {}).get("command")))
