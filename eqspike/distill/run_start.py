"""How a run starts in its directory (``RunDirectory`` inherits ``RunStart``), in this order: ``claim``
checks the directory before any work (resuming: repairs what a crash between two renames left),
``resume`` says where the run continues (the saved settings checked, then the checkpoint's state), and
``start`` makes the directory and writes the settings. An existing run is never overwritten without ``overwrite``, and ``overwrite`` clears
only a folder eqspike made (``RunDirectory.is_own_run``).
"""

from __future__ import annotations

import json
import shutil
from typing import Any

from eqspike.distill.config import ConfigError, RunConfig
from eqspike.distill.yaml_io import save_yaml
from eqspike.runtime.files import check_output_dir, recover_directory, write_atomic
from eqspike.students.model_card import CARD_NAME
from eqspike.version import __version__

MARKER = ".eqspike-run"
CHECKPOINT = "checkpoint"
STUDENT = "student"
STATE = "state.json"


class RunDirectoryError(ConfigError):
    """The run directory cannot be used as asked."""


# Settings that say how a run is invoked, not what it trains.
INVOCATION = ("output_dir", "overwrite", "resume", "max_steps")
# What ``resume`` may change: how the rest of the run is invoked, where it runs and how often it logs and
# saves; not what it trains (``--help`` lists them).
CONTINUATION = INVOCATION + ("device", "micro_batches", "eval_batch_size", "logging_steps", "save_steps", "report_to")


class RunStart:
    """The start-up half of ``RunDirectory`` (which inherits it): claiming, resuming and creating the
    run's folder. It reads the layout's attributes (``root``, ``writes``, ``settings``, ``log_file``,
    ``checkpoint``, ``result_file``) and questions (``started``, ``has_checkpoint``, ``finished``,
    ``is_own_run``)."""

    def claim(self, resume: bool, overwrite: bool, log=print) -> None:
        """Check the directory before anything is written. Resuming: repair what a crash left (the
        checkpoint's state and the log trimmed to it come from ``checkpoint_state``). Otherwise: a file, or a
        folder holding anything but a run stopped before its first checkpoint (started again), is
        refused, unless ``overwrite`` replaces a run eqspike made."""
        if resume and overwrite:
            raise RunDirectoryError("--resume and --overwrite contradict each other; pass one")
        if resume:
            if self.writes:
                self._recover(log)
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
                    f"output directory {self.root} already exists; pass --resume to continue that run or --overwrite to replace it"
                )
            if not self.is_own_run:
                held = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in self.root.iterdir())
                raise RunDirectoryError(
                    f"--overwrite replaces only a run directory eqspike made; {self.root} is not one "
                    f"(it holds {', '.join(held[:5])}{', ...' if len(held) > 5 else ''}); "
                    f"choose another --output-dir"
                )
        return None

    def _recover(self, log) -> None:
        """Finish or undo what a crash left of each atomic write (checkpoint, student, metrics.json, config.yaml)."""
        for name, marker in (
            (CHECKPOINT, STATE),
            (STUDENT, CARD_NAME),
            (self.result_file.name, None),
            (self.settings.name, None),
        ):
            for done in recover_directory(self.root / name, marker):
                log(f"resume: {done}")

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
        return self.checkpoint_state()

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

    def checkpoint_state(self) -> dict[str, Any]:
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
                f"cannot resume: {state_file} is corrupted ({str(error).splitlines()[0][:120]}); start the run again with --overwrite"
            ) from None
        if self.writes and self.log_file.is_file():
            self._trim_log(state["global_step"])
        return state

    def _trim_log(self, step: int) -> None:
        """metrics.jsonl cut to its whole lines of steps up to ``step``."""
        kept = []
        for line in self.log_file.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("step", 0) <= step:
                kept.append(line)
        write_atomic(self.log_file, "".join(f"{line}\n" for line in kept))

    def start(self, config: RunConfig, resuming: bool) -> None:
        """Create the directory (emptied first with ``overwrite``) and write the settings; when
        ``resuming``, they are written only once the checkpoint has loaded (``RunDirectory.save_settings``)."""
        if not self.writes:
            return
        if config.overwrite and self.root.exists() and not resuming and self.is_own_run:
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / MARKER).write_text(json.dumps({"eqspike": __version__}) + "\n")
        if not resuming:
            save_yaml(config, self.settings)


def initial_state() -> dict[str, Any]:
    """The training state of a run at its first step (what checkpoint/state.json holds)."""
    return {
        "stage": 0,
        "stage_step": 0,
        "global_step": 0,
        "best_score": None,
        "best_step": None,
        "best_key": None,
        "energy_weight": 0.0,
        "spike_factor": 1.0,
        "average_energy": None,
    }
