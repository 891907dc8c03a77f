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
that holds eqspike's marker (or, for runs from before the marker, nothing but a run's files). Only the
process that ``writes`` (rank 0 under torchrun) touches the disk.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from eqspike.distill.config import ConfigError, RunConfig, save_yaml
from eqspike.runtime.files import atomic_directory, check_output_dir, recover_directory, write_atomic
from eqspike.runtime.reporting import open_report
from eqspike.students import STUDENTS, load_student, load_student_config
from eqspike.students.model_card import CARD_NAME, model_card, write_model_card
from eqspike.teacher.store import load_tokenizer, teacher_name
from eqspike.version import __version__

MARKER = ".eqspike-run"
CHECKPOINT = "checkpoint"
STUDENT = "student"
STATE = "state.json"


class RunDirectoryError(ConfigError):
    """The run directory cannot be used as asked."""


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


# Settings that say how a run is invoked, not what it trains.
INVOCATION = ("output_dir", "overwrite", "resume", "max_steps")
# What ``resume`` may change: how the rest of the run is invoked, where it runs and how often it logs and
# saves; not what it trains (``--help`` lists them).
CONTINUATION = INVOCATION + ("device", "micro_batches", "eval_batch_size", "logging_steps", "save_steps", "report_to")


class RunDirectory:
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
        from eqspike.distill.config import load_yaml

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

    def check_resume(self, config: RunConfig) -> None:
        """Refuse to resume with settings that contradict the saved ones (but those of CONTINUATION)."""
        differ = self.settings_differ(config, ignore=CONTINUATION)
        if differ:
            saved, now = self.saved_settings(), config.to_dict()
            named = ", ".join(f"{k} (given {now[k]!r}, saved {saved.get(k)!r})" for k in differ)
            raise RunDirectoryError(
                f"--resume continues {self.root} with its saved settings, and {named} "
                f"differ; drop them to continue, or start a new run (--overwrite, or another "
                f"--output-dir). A resume may change only: {', '.join(CONTINUATION[3:])}"
            )

    def save_settings(self, config: RunConfig) -> None:
        """config.yaml: the resolved settings."""
        if self.writes:
            save_yaml(config, self.settings)

    def result(self) -> dict[str, Any] | None:
        return json.loads(self.result_file.read_text()) if self.result_file.is_file() else None

    # ------------------------------------------------------------------ starting
    def claim(self, resume: bool, overwrite: bool, log=print) -> None:
        """Check the directory before anything is written. Resuming: repair what a crash left (the
        checkpoint's state and the log trimmed to it come from ``resume_state``). Otherwise: a file, or a
        folder holding anything but a run stopped before its first checkpoint (started again), is
        refused, unless ``overwrite`` replaces a run eqspike made."""
        if resume and overwrite:
            raise RunDirectoryError("--resume and --overwrite contradict each other; pass one")
        if resume:
            if self.writes:
                for name, marker in (
                    (CHECKPOINT, STATE),
                    (STUDENT, CARD_NAME),
                    (self.result_file.name, None),
                    (self.settings.name, None),
                ):
                    for done in recover_directory(self.root / name, marker):
                        log(f"resume: {done}")
            return None
        if self.root.exists() and not self.root.is_dir():
            raise RunDirectoryError(f"output directory {self.root} is a file; choose another --output-dir")
        if self.writes:
            check_output_dir(self.root, "--output-dir")  # a read-only place refused now, not after the teacher
        if self.root.exists() and any(self.root.iterdir()):
            if not overwrite and self.is_own_run and self.started and not self.has_checkpoint and not self.finished:
                log(f"{self.root} holds a run stopped before its first checkpoint; starting it again")
                self.discard_log()
                return None
            if not overwrite:
                raise RunDirectoryError(
                    f"output directory {self.root} already exists; pass --resume to continue that run "
                    f"or --overwrite to replace it"
                )
            if not self.is_own_run:
                held = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in self.root.iterdir())
                raise RunDirectoryError(
                    f"--overwrite replaces only a run directory eqspike made; {self.root} is not one "
                    f"(it holds {', '.join(held[:5])}{', ...' if len(held) > 5 else ''}); "
                    f"choose another --output-dir"
                )
        return None

    def resume(self, config: RunConfig, log=print) -> dict[str, Any] | None:
        """Where a run continues (after ``claim``): None to start from the beginning (not resuming, or a run
        stopped before its first checkpoint, whose log is discarded); else the checkpoint's state, once the
        saved settings are checked against ``config`` (``check_resume``)."""
        if not config.resume:
            return None
        if self.started and not self.has_checkpoint and not self.finished:
            log(f"resume: {self.root} stopped before its first checkpoint; starting it from the beginning")
            self.discard_log()
            return None
        if self.started:
            self.check_resume(config)
        return self.resume_state()

    def resume_state(self) -> dict[str, Any]:
        """The checkpoint's state (after ``claim``); the log keeps the lines up to its step, as the
        resumed run logs the steps after it again and a crash may have cut the last line short."""
        state_file = self.checkpoint / STATE
        if not state_file.is_file():
            raise RunDirectoryError(f"cannot resume: {self.root} has no checkpoint ({state_file} is missing)")
        try:
            state = json.loads(state_file.read_text())
            if not isinstance(state, dict) or not {"stage", "stage_step", "global_step"} <= set(state):
                raise ValueError("it lacks stage, stage_step or global_step")
        except (ValueError, UnicodeDecodeError) as error:
            raise RunDirectoryError(
                f"cannot resume: {state_file} is corrupted ({str(error).splitlines()[0][:120]}); "
                f"start the run again with --overwrite"
            ) from None
        if self.writes and self.log_file.is_file():
            kept = []
            for line in self.log_file.read_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("step", 0) <= state["global_step"]:
                    kept.append(line)
            write_atomic(self.log_file, "".join(f"{line}\n" for line in kept))
        return state

    def discard_log(self) -> None:
        """Forget the log of a run that stopped before its first checkpoint (it starts again)."""
        if self.writes:
            self.log_file.unlink(missing_ok=True)

    def start(self, config: RunConfig, resuming: bool) -> None:
        """Create the directory (emptied first with ``overwrite``) and write the settings; when
        ``resuming``, they are written only once the checkpoint has loaded (``save_settings``)."""
        if not self.writes:
            return
        if config.overwrite and self.root.exists() and not resuming and self.is_own_run:
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / MARKER).write_text(json.dumps({"eqspike": __version__}) + "\n")
        if not resuming:
            save_yaml(config, self.settings)

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
