"""The distillation run: ``Distiller(config).run()`` distils a spiking student from its teacher and
writes the run directory (``eqspike.distill.run_directory``; docs/design.md §5-6).

``_run`` reads top to bottom: the run directory and the inputs are checked (``RunDirectory.claim``, ``resume``); the teacher
is found (or fine-tuned); the student is built from the teacher's layers and prepared (thresholds
calibrated); then each ``Stage`` of the recipe (``stages``), described as data (name, steps, learning
rate, loss), is trained by ``train_stage``: one ``step`` per global batch (forward, losses, implicit
backward), then clipping and the update, logging, evaluations that keep the best student
(``selection``), and checkpoints; finally the best student is scored as a spiking network at T and
``metrics.json`` is written (``results``). Under an energy budget the penalty's weight follows a dual
ascent (``energy_budget``). Under torchrun (``process_group``) every rank takes a shard of the same
global batch, so N processes train the student one process would.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor

from eqspike.distill.config import RunConfig
from eqspike.distill.energy_budget import dual_ascent, starting_energy_warning
from eqspike.distill.inputs import RunInputs
from eqspike.distill.losses import Share, spike_energy
from eqspike.distill.prepare import Prepared
from eqspike.distill.results import divergence_message, finish
from eqspike.distill.run_directory import RunDirectory, RunDirectoryError
from eqspike.distill.run_start import initial_state
from eqspike.distill.run_targets import run_targets
from eqspike.distill.selection import Evaluator, better
from eqspike.distill.stages import Stage, StageForward, calibration_batches, global_batch, recipe, steps_per_epoch
from eqspike.distill.students import build_student
from eqspike.errors import EqspikeError
from eqspike.runtime.devices import autocast, set_seed
from eqspike.runtime.distributed import Sharding, process_group, shard
from eqspike.runtime.environment import environment_record
from eqspike.runtime.optim import linear_schedule, make_optimizer, weight_average
from eqspike.runtime.progress import StepLog, progress
from eqspike.students import check_warm_start
from eqspike.students.energy import StudentEnergy
from eqspike.teacher.base import Teacher
from eqspike.teacher.targets import TargetsFn, live_targets


class TrainingDiverged(EqspikeError):
    """A loss or gradient became non-finite; the run stopped with its last good checkpoint."""


class Distiller:
    """``Distiller(config).run()`` distils a spiking student and writes the run directory. ``inputs``:
    the data and teacher opened already (``RunInputs.open``, for the same task, data and teacher
    settings), as ``eqspike compare`` passes them to its runs; by default the run opens its own."""

    def __init__(self, config: RunConfig, log=print, command: str | None = None, inputs: RunInputs | None = None) -> None:
        self.config = config
        self.inputs = inputs
        self._print = log
        self.command = command  # the command line, for metrics.json and the model card
        self.targets: TargetsFn | None = None  # the teacher's targets of a batch (None: the task loss only)
        self._energy_model: StudentEnergy | None = None  # for a student trained under an energy budget
        self._stage_index = 0  # the stage training now

    def run(self) -> dict[str, Any]:
        with process_group(self.config.device) as (self.sharding, self.device):
            self.log = self._print if self.sharding.is_main else (lambda *_: None)
            self.run_dir = RunDirectory(
                RunDirectory.root_for(self.config),
                writes=self.sharding.is_main,
                command=self.command,
                report_to=self.config.report_to,
            )
            self.evaluator = Evaluator(self.config, self.run_dir, self.sharding, self.device, self.log)
            return self._run()

    def _run(self) -> dict[str, Any]:
        c = self.config
        # 1. The run directory (repaired after a crash when resuming) and the inputs, checked before any work.
        self.run_dir.claim(c.resume, c.overwrite, self.log)
        self.sharding.barrier()
        resume_state = self.run_dir.resume(c, self.log)
        # Recorded now, not at the end: the commit and packages of the code that trains this run.
        self.environment = environment_record(self.device, c.precision)
        # a warm start's saved student, refused now (not after the teacher's fine-tuning) if it does not fit
        warm_from = check_warm_start(c.warm_start, c.student_layers, c.student_widths) if c.warm_start else None
        set_seed(c.seed)
        inputs = self.inputs or RunInputs.open(c, self.device, self.log, self._on_main_first)
        data, teacher = inputs.data, inputs.teacher
        self.run_dir.start(c, resuming=resume_state is not None)
        if self.sharding.distributed:
            self.log(
                f"distributed: {self.sharding.world_size} processes ({torch.distributed.get_backend()}), "
                f"{c.batch_size} examples per step in all; evaluation batches are shared out; "
                f"rank 0 logs and writes checkpoints"
            )
        teacher_metrics = self.evaluator.evaluate(lambda batch: teacher.model(**batch).logits, data, "teacher dev")
        self.log(f"teacher: dev {data.task.metric} {teacher_metrics[data.task.metric]:.4f}")

        # 2. The student, from the teacher's layers, and the recipe's stages.
        state = resume_state or initial_state()
        stages = self.stages(data)
        student = self._build_student(teacher, data, stages, warm_from, resume_state)
        self.targets = run_targets(
            c,
            teacher,
            data,
            student,
            device=self.device,
            log=self.log,
            on_main_first=self._on_main_first,
            with_layers=state["stage"] == 0 and stages[0].steps > 0,
            stage_index=lambda: self._stage_index,
        )

        # 3. The stages, each with its optimiser and schedule.
        self._started = time.time()
        for stage in stages[state["stage"] :]:
            reached = c.max_steps is not None and state["global_step"] >= c.max_steps and stage.steps > state["stage_step"]
            if reached or not self.train_stage(student, stage, data, state, resume_state):
                self.log(
                    f"stopped after {state['global_step']} steps (max_steps); continue with --resume "
                    f"--max-steps none (or a larger limit)"
                )
                return {"status": "interrupted", **state}
        if state["best_score"] is None:  # no prediction stage: the final student is the one kept
            self.evaluator.evaluate_and_select(student, data, state)

        # 4. The best student, scored as it is deployed.
        return finish(self.evaluator, data, teacher_metrics, self.command, self.environment)

    def stages(self, data: Prepared) -> list[Stage]:
        """The recipe's stages for this run's settings and data (``stages.recipe``)."""
        return recipe(self.config, data)

    def _build_student(
        self, teacher: Teacher, data: Prepared, stages: list[Stage], warm_from, resume_state: dict[str, Any] | None
    ) -> torch.nn.Module:
        """The student from the teacher's layers (or a warm start's weights), prepared on the calibration
        batches and the first batch it trains on; when resuming, the checkpoint's weights loaded (and the
        continuation's settings saved). Left in training mode."""
        c = self.config
        student = build_student(teacher.model, c).to(self.device)
        student.config.text_pairs = any(e.text_b is not None for e in data.task.train)
        if warm_from is not None:
            self.log(f"student: warm start from the saved student {warm_from} (every weight but the thresholds)")
        first = next((s for s in stages if s.steps), stages[-1])
        student.prepare(calibration_batches(data, c, self.device), self._collate(data, global_batch(data, c, first, 0)))
        if resume_state is not None:
            student.load_state_dict(self.run_dir.load_checkpoint("student.pt", self.device))
            self.run_dir.save_settings(c)  # the continuation settings of this invocation, once the checkpoint loaded
        student.train()
        if c.energy_budget is not None:
            self._energy_model = StudentEnergy.of(student.config)
        return student

    def train_stage(
        self, student, stage: Stage, data: Prepared, state: dict[str, Any], resume_state: dict[str, Any] | None
    ) -> bool:
        """Train one stage from where ``state`` stands; False when ``max_steps`` stopped it."""
        c, sharding = self.config, self.sharding
        self._stage_index = stage.index
        forward = self._stage_forward(student, stage)
        optimizer = make_optimizer(student.named_parameters(), stage.lr, c.weight_decay, c.threshold_lr)
        schedule = linear_schedule(optimizer, max(1, stage.steps), c.warmup_ratio)
        # The student evaluated and kept: the weights trained, or in stage 2 their moving average (ema_decay).
        average = weight_average(student, c.ema_decay) if c.ema_decay and stage.name == "prediction" else None
        first = state["stage_step"] if stage.index == state["stage"] else 0
        if first and resume_state is not None:
            self._restore_optimizer(optimizer, schedule, average)
            self.log(f"resume: {stage.name} stage at step {first}/{stage.steps} (global step {state['global_step']})")
        if stage.energy_budget is not None and first == 0:  # the spikes-per-rate factor of the starting student
            self.evaluator.evaluate_and_select(student, data, state)
            warning = starting_energy_warning(state, stage.energy_budget)
            if warning is not None:
                self.log(warning)
        eval_every = max(1, steps_per_epoch(data, c.batch_size) // c.evals_per_epoch)
        bar, log_lines = self._progress(stage, first)
        for step in range(first, stage.steps):
            losses = self.step(
                forward, stage, data, global_batch(data, c, stage, step), state["energy_weight"], state["spike_factor"]
            )
            norm = torch.nn.utils.clip_grad_norm_(student.parameters(), c.max_grad_norm)
            if not torch.isfinite(norm):  # the same on every rank (gradients are reduced): all stop
                bar.close()
                raise TrainingDiverged(divergence_message(self.run_dir, state, stage.name, sharding.mean_of(losses)))
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            if average is not None:
                average.update_parameters(student)
            losses = sharding.mean_of(losses)
            if stage.energy_budget is not None:
                dual_ascent(c, losses, state, stage.energy_budget, average)
            state.update(stage=stage.index, stage_step=step + 1, global_step=state["global_step"] + 1)
            self._report_step(stage, step, losses, schedule.get_last_lr()[0], state, bar, log_lines)
            if stage.name == "prediction" and ((step + 1) % eval_every == 0 or step + 1 == stage.steps):
                self.evaluator.evaluate_and_select(student if average is None else average.module, data, state)
            interrupted = c.max_steps is not None and state["global_step"] >= c.max_steps
            if (step + 1) % c.save_steps == 0 or step + 1 == stage.steps or interrupted:
                self._save_checkpoint(student, optimizer, schedule, state, average)
            if interrupted:
                bar.close()
                return False
        bar.close()
        state.update(stage=stage.index + 1, stage_step=0)
        self._save_checkpoint(student, optimizer, schedule, state, average)
        self.log(f"{stage.name} stage done ({stage.steps} steps)")
        return True

    def _stage_forward(self, student, stage: Stage) -> torch.nn.Module:
        """The student's forward for ``stage`` (``StageForward``), wrapped in DDP under torchrun."""
        forward = StageForward(student, stage.name, with_rates=stage.energy_budget is not None)
        if self.sharding.distributed:
            forward = torch.nn.parallel.DistributedDataParallel(
                forward,
                device_ids=[self.device] if self.device.type == "cuda" else None,
                broadcast_buffers=False,
                find_unused_parameters=True,
            )
        return forward

    def _restore_optimizer(self, optimizer, schedule, average) -> None:
        """The optimizer, schedule and weight average of the stage a checkpoint stopped in."""
        checkpoint = self.run_dir.load_checkpoint("optimizer.pt", self.device)
        optimizer.load_state_dict(checkpoint["optimizer"])
        schedule.load_state_dict(checkpoint["schedule"])
        if average is not None:
            average.load_state_dict(checkpoint["ema"])

    def _progress(self, stage: Stage, first: int) -> tuple[Any, StepLog]:
        """The progress bar and the log lines of ``stage`` from step ``first`` (rank 0 alone shows them)."""
        c, is_main = self.config, self.sharding.is_main
        bar = progress(total=stage.steps, desc=f"distill {stage.name}", disable=None if is_main else True)
        bar.update(first)
        log_lines = StepLog(
            f"distill {stage.name}",
            stage.steps,
            c.logging_steps,
            c.batch_size,
            self.log,
            first,
            enabled=None if is_main else False,
        )
        return bar, log_lines

    def _report_step(
        self, stage: Stage, step: int, losses: dict[str, Tensor], lr: float, state: dict[str, Any], bar, log_lines: StepLog
    ) -> None:
        """A step done: the progress bar and the log lines, and every ``logging_steps`` a metrics.jsonl record."""
        bar.update(1)
        bar.set_postfix(loss=f"{losses['loss'].item():.4f}")
        log_lines.update(step + 1, lr, **{k: losses[k].item() for k in ("loss", "energy") if k in losses})
        if state["global_step"] % self.config.logging_steps == 0:
            self.run_dir.log(
                {
                    "step": state["global_step"],
                    "stage": stage.name,
                    "lr": lr,
                    "elapsed_s": round(time.time() - self._started, 2),
                    **{k: round(v.item(), 6) for k, v in losses.items()},
                }
            )

    def step(
        self, forward, stage: Stage, data: Prepared, indices: list[int], energy_weight: float = 0.0, spike_factor: float = 1.0
    ) -> dict[str, Tensor]:
        """Forward and backward of this rank's parts of the global batch ``indices``, gradients
        accumulated over its ``micro_batches`` parts (DDP synchronises them after the last part).
        Returns the detached losses summed over the parts; their mean over ranks is the loss of the
        global batch. When the forward returns rates (an energy budget), the loss adds
        ``energy_weight`` x the estimated energy ratio E = spike_factor x spike_energy + dense part,
        where spike_factor is the simulated spikes' energy over the rates' estimate (measured at
        the last evaluation); ``energy`` is E."""
        lengths = [len(data.train.input_ids[i]) for i in indices]
        share = Share.of(lengths, self.sharding.world_size)
        if self._energy_model is not None:
            share = dataclasses.replace(share, teacher_pj=sum(map(self._energy_model.teacher_pj, lengths)))
        parts = shard(indices, self.sharding, self.config.micro_batches)
        totals: dict[str, Tensor] = {}
        for number, (mine, real) in enumerate(parts, start=1):
            batch = self._collate(data, mine)
            synchronise = number == len(parts) or not hasattr(forward, "no_sync")
            with nullcontext() if synchronise else forward.no_sync():
                inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
                with autocast(self.config.precision, self.device):  # the losses below are computed in float32
                    targets = None if self.targets is None else self.targets(batch)
                    out = forward(**inputs)
                part = dataclasses.replace(share, real=real)
                losses = stage.loss(out, targets, batch, part)
                if out.rates is not None:  # under an energy budget
                    energy = spike_energy(out.rates, batch["attention_mask"], self._energy_model, self.config.time_steps, part)
                    losses["loss"] = losses["loss"] + energy_weight * spike_factor * energy
                    losses["energy"] = energy.detach()
                losses["loss"].backward()
            for name, value in losses.items():
                totals[name] = totals[name] + value.detach() if name in totals else value.detach()
        if "energy" in totals:  # + what stays multiply-accumulate (the same on every rank)
            dense = sum(self._energy_model.dense_pj(n, self.config.time_steps) for n in lengths)
            totals["energy"] = spike_factor * totals["energy"] + dense / share.teacher_pj
        return totals

    def attach(self, device: torch.device, teacher: Teacher, layers: list[int]) -> None:
        """Set up ``step`` outside ``run``, in one process on ``device`` with the teacher run live (to
        time a training step, as ``eqspike compare`` does)."""
        self.sharding, self.device = Sharding(), device
        self.targets = None if self.config.task_loss_only else live_targets(teacher.model, layers)

    def _collate(self, data: Prepared, indices: list[int]) -> dict[str, Tensor]:
        """The training examples ``indices`` as one padded batch on the device."""
        return {k: v.to(self.device) for k, v in data.train.collate([data.train[i] for i in indices]).items()}

    def _on_main_first(self, action):
        """Run ``action`` on rank 0, then on the other ranks (which may read what rank 0 wrote).
        An error on rank 0 stops every rank instead of leaving them waiting."""
        result = None
        if self.sharding.is_main:
            try:
                result = action()
            except BaseException:
                self.sharding.all_ok(False)
                raise
        if not self.sharding.all_ok(True):
            raise RunDirectoryError("rank 0 failed; its message says why")
        return result if self.sharding.is_main else action()

    # -------------------------------------------------------------- the best student
    def _better(self, key: list, best: list | None, energy_weight: float) -> bool:
        """Whether an evaluation ``key`` = [within budget, score, energy] beats the best so far under
        this run's energy budget (``selection.better``)."""
        return better(key, best, energy_weight, self.config.energy_budget)

    def _save_checkpoint(self, student, optimizer, schedule, state: dict[str, Any], average=None) -> None:
        """checkpoint/: the student's weights, the optimizer, schedule and weight average, and ``state``."""
        training = {"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()}
        if average is not None:
            training["ema"] = average.state_dict()
        self.run_dir.save_checkpoint(student.state_dict(), training, state)
