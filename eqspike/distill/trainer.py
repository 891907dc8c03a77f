"""The distillation run: ``Distiller(config).run()`` distils a spiking student from its teacher and
writes the run directory (``eqspike.distill.run_directory``; docs/design.md §5-6).

``_run`` reads top to bottom: the run directory and the inputs are checked; the teacher is found (or
fine-tuned); the student is built from the teacher's layers and prepared (thresholds calibrated);
then each ``Stage`` of the recipe, described as data (name, steps, learning rate, loss), is trained
by ``train_stage``: one ``step`` per global batch (forward, losses, implicit backward), then
clipping and the update, logging, dev evaluations that keep the best student, and checkpoints;
finally the best student is scored as a spiking network at T and ``metrics.json`` is written.
Under torchrun (``process_group``) every rank takes a shard of the same global batch, so N processes
train the student one process would.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from eqspike.data.batches import batch_order, iterate_batches
from eqspike.data.evaluation import evaluate
from eqspike.distill.config import RunConfig
from eqspike.distill.inputs import RunInputs
from eqspike.distill.losses import (
    Share,
    gold_loss,
    intermediate_loss,
    prediction_loss,
    spike_energy,
)
from eqspike.distill.prepare import Prepared
from eqspike.distill.run_directory import RunDirectory, RunDirectoryError
from eqspike.distill.scoring import score_spiking
from eqspike.distill.students import build_student
from eqspike.errors import EqspikeError
from eqspike.runtime.devices import autocast, set_seed
from eqspike.runtime.distributed import Sharding, process_group, shard
from eqspike.runtime.environment import environment_record
from eqspike.runtime.optim import linear_schedule, make_optimizer, weight_average
from eqspike.runtime.progress import StepLog, progress
from eqspike.students import STUDENTS, check_warm_start, load_student
from eqspike.students.common import uniform_layer_map
from eqspike.students.energy import StudentEnergy
from eqspike.teacher.base import Teacher
from eqspike.teacher.targets import TargetsFn, cached_targets, live_targets
from eqspike.version import __version__

# Under an energy budget B the loss adds lambda x E, the estimated energy ratio of the step, and after
# every step lambda <- max(0, lambda + energy_dual_step (E - B) / B) (dual ascent on the constraint E <= B,
# its violation measured relative to the budget so that one step size suits any B).


class TrainingDiverged(EqspikeError):
    """A loss or gradient became non-finite; the run stopped with its last good checkpoint."""


@dataclass
class StageOutput:
    hidden_values: list[Tensor] | None
    attention_scores: list[Tensor] | None
    logits: Tensor | None
    rates: dict[str, Tensor] | None


LossFn = Callable[[StageOutput, "dict[str, Any] | None", "dict[str, Tensor]", Share], "dict[str, Tensor]"]


@dataclass(frozen=True)
class Stage:
    """One stage of the recipe: its name, number of steps and learning rate, its loss (of the
    student's stage output, the teacher's targets, the batch and the global counts), and the energy
    budget it is held to (None: none)."""

    index: int
    name: str
    steps: int
    lr: float
    loss: LossFn
    energy_budget: float | None = None


class StageForward(torch.nn.Module):
    """The student's forward returning only what a stage's losses read (hidden values and attention
    scores, or logits; the rates too under an energy budget), so that DDP sees the head as unused in
    the intermediate stage."""

    def __init__(self, student: torch.nn.Module, stage: str, with_rates: bool = False) -> None:
        super().__init__()
        self.student, self.stage, self.with_rates = student, stage, with_rates

    def forward(self, **inputs: Tensor) -> StageOutput:
        if self.stage == "intermediate":
            out = self.student(**inputs, output_attention_scores=True)
            return StageOutput(
                self.student.in_teacher_space(out.hidden_values),
                out.attention_scores,
                None,
                out.rates if self.with_rates else None,
            )
        out = self.student(**inputs)
        return StageOutput(None, None, out.logits, out.rates if self.with_rates else None)


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
            return self._run()

    def _run(self) -> dict[str, Any]:
        c, sharding = self.config, self.sharding
        # 1. The run directory (repaired after a crash when resuming) and the inputs, checked before any work.
        self.run_dir.claim(c.resume, c.overwrite, self.log)
        sharding.barrier()
        resume_state = self.run_dir.resume(c, self.log)
        # Recorded now, not at the end: the commit and packages of the code that trains this run.
        self.environment = environment_record(self.device, c.precision)
        # a warm start's saved student, refused now (not after the teacher's fine-tuning) if it does not fit
        warm_from = check_warm_start(c.warm_start, c.student_layers, c.student_widths) if c.warm_start else None
        set_seed(c.seed)
        inputs = self.inputs or RunInputs.open(c, self.device, self.log, self._on_main_first)
        data, teacher = inputs.data, inputs.teacher
        self.run_dir.start(c, resuming=resume_state is not None)
        if sharding.distributed:
            self.log(
                f"distributed: {sharding.world_size} processes ({torch.distributed.get_backend()}), "
                f"{c.batch_size} examples per step in all; evaluation batches are shared out; "
                f"rank 0 logs and writes checkpoints"
            )
        teacher_metrics = self._evaluate(lambda batch: teacher.model(**batch).logits, data, "teacher dev")
        self.log(f"teacher: dev {data.task.metric} {teacher_metrics[data.task.metric]:.4f}")

        # 2. The student, from the teacher's layers, and the recipe's stages.
        state = resume_state or {
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
        stages = self.stages(data)
        student = build_student(teacher.model, c).to(self.device)
        student.config.text_pairs = any(e.text_b is not None for e in data.task.train)
        if warm_from is not None:
            self.log(f"student: warm start from the saved student {warm_from} (every weight but the thresholds)")
        first = next((s for s in stages if s.steps), stages[-1])
        student.prepare(self._calibration_batches(data), self._collate(data, self._global_batch(data, first, 0)))
        if resume_state is not None:
            student.load_state_dict(self.run_dir.load_checkpoint("student.pt", self.device))
            self.run_dir.save_settings(c)  # the continuation settings of this invocation, once the checkpoint loaded
        student.train()
        if c.energy_budget is not None:
            self._energy_model = StudentEnergy.of(student.config)
        layers = (
            student.config.teacher_layers
            if c.student_init != "random"
            else uniform_layer_map(teacher.model.config.num_hidden_layers, student.config.num_hidden_layers)
        )
        if not c.task_loss_only:
            self.targets = (
                self._cached_targets(teacher, data, layers, with_layers=state["stage"] == 0 and stages[0].steps > 0)
                if c.cache_teacher
                else live_targets(teacher.model, layers)
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
            self._evaluate_and_select(student, data, state)

        # 4. The best student, scored as it is deployed.
        return self._finish(data, teacher_metrics)

    def stages(self, data: Prepared) -> list[Stage]:
        """The recipe: layerwise distillation, then the teacher's predictions (docs/design.md §6). With
        SpikeLM's own recipe, the task loss alone in the second stage."""
        c, regression = self.config, data.task.is_regression
        per_epoch = self._steps_per_epoch(data)
        intermediate = Stage(
            0,
            "intermediate",
            0 if c.task_loss_only else round(c.intermediate_epochs * per_epoch),
            c.intermediate_lr,
            lambda out, targets, batch, share: intermediate_loss(out, targets, batch["attention_mask"], c, share),
        )
        if c.task_loss_only:

            def predict(out, targets, batch, share):
                gold = gold_loss(out.logits, batch["labels"], regression, share)
                return {"loss": gold, "gold": gold.detach()}
        else:

            def predict(out, targets, batch, share):
                return prediction_loss(out.logits, targets["logits"], batch["labels"], regression, c, share)

        # The energy budget holds in the prediction stage; the intermediate stage aligns the student
        # with the teacher's layers, which a budget would fight (docs/design.md §5).
        prediction = Stage(1, "prediction", round(c.prediction_epochs * per_epoch), c.prediction_lr, predict, c.energy_budget)
        return [intermediate, prediction]

    def train_stage(
        self, student, stage: Stage, data: Prepared, state: dict[str, Any], resume_state: dict[str, Any] | None
    ) -> bool:
        """Train one stage from where ``state`` stands; False when ``max_steps`` stopped it."""
        c, sharding = self.config, self.sharding
        self._stage_index = stage.index
        forward = StageForward(student, stage.name, with_rates=stage.energy_budget is not None)
        if sharding.distributed:
            forward = torch.nn.parallel.DistributedDataParallel(
                forward,
                device_ids=[self.device] if self.device.type == "cuda" else None,
                broadcast_buffers=False,
                find_unused_parameters=True,
            )
        optimizer = make_optimizer(student.named_parameters(), stage.lr, c.weight_decay, c.threshold_lr)
        schedule = linear_schedule(optimizer, max(1, stage.steps), c.warmup_ratio)
        # The student evaluated and kept: the weights trained, or in stage 2 their moving average (ema_decay).
        average = weight_average(student, c.ema_decay) if c.ema_decay and stage.name == "prediction" else None
        first = state["stage_step"] if stage.index == state["stage"] else 0
        if first and resume_state is not None:
            self._restore_optimizer(optimizer, schedule, average)
            self.log(f"resume: {stage.name} stage at step {first}/{stage.steps} (global step {state['global_step']})")
        if stage.energy_budget is not None and first == 0:  # the spikes-per-rate factor of the starting student
            self._evaluate_and_select(student, data, state)
            start = (state.get("best_key") or [None, None, None])[2]
            if start is not None and start <= stage.energy_budget:
                self.log(
                    f"warning: the student starts this stage at {start:.3f} of the teacher's energy, within the "
                    f"budget {stage.energy_budget:g}: the budget binds only if training raises its energy"
                )
        eval_every = max(1, self._steps_per_epoch(data) // c.evals_per_epoch)
        bar = progress(total=stage.steps, desc=f"distill {stage.name}", disable=None if sharding.is_main else True)
        bar.update(first)
        log_lines = StepLog(
            f"distill {stage.name}",
            stage.steps,
            c.logging_steps,
            c.batch_size,
            self.log,
            first,
            enabled=None if sharding.is_main else False,
        )
        for step in range(first, stage.steps):
            losses = self.step(
                forward, stage, data, self._global_batch(data, stage, step), state["energy_weight"], state["spike_factor"]
            )
            norm = torch.nn.utils.clip_grad_norm_(student.parameters(), c.max_grad_norm)
            if not torch.isfinite(norm):  # the same on every rank (gradients are reduced): all stop
                bar.close()
                raise TrainingDiverged(self._divergence(state, stage.name, sharding.mean_of(losses)))
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            if average is not None:
                average.update_parameters(student)
            losses = sharding.mean_of(losses)
            if stage.energy_budget is not None:
                self._dual_ascent(losses, state, stage.energy_budget, average)
            state.update(stage=stage.index, stage_step=step + 1, global_step=state["global_step"] + 1)
            bar.update(1)
            bar.set_postfix(loss=f"{losses['loss'].item():.4f}")
            log_lines.update(
                step + 1, schedule.get_last_lr()[0], **{k: losses[k].item() for k in ("loss", "energy") if k in losses}
            )
            if state["global_step"] % c.logging_steps == 0:
                self.run_dir.log(
                    {
                        "step": state["global_step"],
                        "stage": stage.name,
                        "lr": schedule.get_last_lr()[0],
                        "elapsed_s": round(time.time() - self._started, 2),
                        **{k: round(v.item(), 6) for k, v in losses.items()},
                    }
                )
            if stage.name == "prediction" and ((step + 1) % eval_every == 0 or step + 1 == stage.steps):
                self._evaluate_and_select(student if average is None else average.module, data, state)
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

    def _restore_optimizer(self, optimizer, schedule, average) -> None:
        """The optimizer, schedule and weight average of the stage a checkpoint stopped in."""
        checkpoint = self.run_dir.load_checkpoint("optimizer.pt", self.device)
        optimizer.load_state_dict(checkpoint["optimizer"])
        schedule.load_state_dict(checkpoint["schedule"])
        if average is not None:
            average.load_state_dict(checkpoint["ema"])

    def _dual_ascent(self, losses: dict[str, Tensor], state: dict[str, Any], budget: float, average) -> None:
        """lambda <- max(0, lambda + energy_dual_step (E - B) / B): the weight grows while the estimate E
        (the step's, or the weight average's: ``_budgeted_energy``) is over the budget B; logged with the losses."""
        state["energy_weight"] = max(
            0.0,
            state["energy_weight"]
            + self.config.energy_dual_step * (self._budgeted_energy(losses["energy"].item(), state, average) - budget) / budget,
        )
        losses["energy_weight"] = torch.tensor(state["energy_weight"])
        if average is not None:
            losses["average_energy"] = torch.tensor(state["average_energy"])

    def _budgeted_energy(self, energy: float, state: dict[str, Any], average) -> float:
        """The energy the budget holds for: the step's estimate E_t, or, when the moving average of the
        weights is the student kept, the same average of the estimates, E_avg <- d E_avg + (1 - d) E_t
        (the first step copies E_t): to first order the averaged weights' energy, which lags the trained
        weights' while training lowers it."""
        if average is None:
            return energy
        previous = state.get("average_energy")
        decay = self.config.ema_decay
        state["average_energy"] = energy if previous is None else decay * previous + (1 - decay) * energy
        return state["average_energy"]

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

    # -------------------------------------------------------------- batches
    def _steps_per_epoch(self, data: Prepared) -> int:
        return -(-len(data.train) // self.config.batch_size)

    def _global_batch(self, data: Prepared, stage: Stage, step: int) -> list[int]:
        """The indices of the global batch of one optimiser step (the same for any number of ranks)."""
        epoch, position = divmod(step, self._steps_per_epoch(data))
        return batch_order(len(data.train), self.config.batch_size, self.config.seed, 1000 * stage.index + epoch)[position]

    def _collate(self, data: Prepared, indices: list[int]) -> dict[str, Tensor]:
        return {k: v.to(self.device) for k, v in data.train.collate([data.train[i] for i in indices]).items()}

    def _calibration_batches(self, data: Prepared) -> list[dict[str, Tensor]]:
        """The first ``calibration_examples`` of a shuffled pass (its own order: 'epoch' -1)."""
        batches, seen = [], 0
        for batch in iterate_batches(data.train, batch_order(len(data.train), self.config.batch_size, self.config.seed, -1)):
            batches.append({k: v.to(self.device) for k, v in batch.items()})
            seen += len(batch["input_ids"])
            if seen >= self.config.calibration_examples:
                break
        return batches

    # -------------------------------------------------------------- the teacher
    def _cached_targets(self, teacher: Teacher, data: Prepared, layers: list[int], with_layers: bool) -> TargetsFn:
        from eqspike.teacher.cache import build_or_open

        c = self.config
        root = Path(c.teacher_cache_dir) if c.teacher_cache_dir else Path(c.teacher_store) / "cache"
        cache = self._on_main_first(
            lambda: build_or_open(
                teacher.model,
                data.train,
                layers,
                root,
                with_layers=with_layers,
                dtype=c.teacher_cache_dtype,
                batch_size=c.eval_batch_size,
                device=self.device,
                max_gb=c.teacher_cache_max_gb,
                log=self.log,
                logits_if_too_large=True,
            )
        )
        cached = cached_targets(cache, self.device)
        if with_layers and not cache.with_layers:  # too large with the layers: they come from the live teacher
            live = live_targets(teacher.model, layers)
            return lambda batch: live(batch) if self._stage_index == 0 else cached(batch)
        return cached

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

    # -------------------------------------------------------------- evaluation and the best student
    def _evaluate(self, logits_fn, data: Prepared, desc: str, splits=None) -> dict[str, float]:
        """Metrics on ``splits`` (default: the dev splits), with the batches shared out over the ranks
        (every rank gets them all)."""
        return evaluate(
            logits_fn,
            data.task,
            data.splits if splits is None else splits,
            self.config.eval_batch_size,
            self.device,
            desc,
            self.sharding,
        )

    def _score_spiking(self, student, data: Prepared, T: int, spike_factor: bool = False, splits=None):
        return score_spiking(
            student, data, T, self.config.eval_batch_size, self.device, self.sharding, spike_factor, splits=splits
        )

    def _evaluate_and_select(self, student, data: Prepared, state: dict[str, Any]) -> None:
        """Score on the selection splits (``Prepared.selection``: held-out training data, or the dev set
        with ``selection: dev``); rank 0 saves the best student so far. A student trained for its time steps is
        scored as it is deployed: simulated for T steps, its energy measured from its spikes. Under an
        energy budget the best student is the best-scoring one within budget (while none is, the best by
        score - lambda (E - B) / B: ``_better``). A student trained for T = infinity is scored at its equilibrium (solve)."""
        c = self.config
        student.eval()
        energy = None
        if STUDENTS[c.student_type].train_for(c) == "time_steps":
            score = self._score_spiking(
                student, data, c.time_steps, spike_factor=c.energy_budget is not None, splits=data.selection
            )
            metrics, energy, mode = score.metrics, score.energy_ratio, f"simulate T={c.time_steps}"
            if score.spike_factor is not None:
                state["spike_factor"] = score.spike_factor
        else:
            metrics, mode = (
                self._evaluate(lambda b: student(**b, mode="solve").logits, data, "student selection", data.selection),
                "solve",
            )
        student.train()
        value = metrics[data.task.metric]
        self.run_dir.log(
            {"step": state["global_step"], "eval": metrics, "mode": mode, "energy_ratio": energy, "split": c.selection}
        )
        feasible = c.energy_budget is None or energy <= c.energy_budget
        key = [feasible, value, energy]
        improved = self._better(key, state.get("best_key"), state["energy_weight"])
        self.log(
            f"step {state['global_step']}: {'dev' if c.selection == 'dev' else 'selection'} {data.task.metric} {value:.4f} ({mode}"
            + (f", energy {energy:.3f}" if energy is not None else "")
            + ")"
            + (" *best*" if improved else "")
        )
        if improved:
            state.update(best_score=value, best_step=state["global_step"], best_key=key)
            self.run_dir.save_student(student, data.tokenizer, best={"step": state["global_step"], "score": value})

    def _better(self, key: list, best: list | None, energy_weight: float) -> bool:
        """Whether an evaluation ``key`` = [within budget, score, energy] beats the best so far. Within
        the budget (or without one) the higher score wins, and any evaluation within it beats any
        outside it. While none is within it, the higher merit score - lambda (E - B) / B wins, lambda the
        energy penalty's weight now: the price of energy the dual ascent has reached, so that a student
        1% cheaper but 16 points worse is not kept over a better one (as the least-energy rule did)."""
        if best is None:
            return True
        if key[0] != best[0]:
            return key[0]
        if key[0]:
            return key[1] > best[1]
        if len(best) == 2:  # a checkpoint of eqspike <= 0.2: [False, -energy]
            best = [False, float("-inf"), -best[1]]
        budget = self.config.energy_budget

        def merit(score: float, energy: float) -> float:
            return score - energy_weight * (energy - budget) / budget

        return merit(key[1], key[2]) > merit(best[1], best[2])

    def _save_checkpoint(self, student, optimizer, schedule, state: dict[str, Any], average=None) -> None:
        training = {"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()}
        if average is not None:
            training["ema"] = average.state_dict()
        self.run_dir.save_checkpoint(student.state_dict(), training, state)

    def _divergence(self, state: dict[str, Any], stage: str, losses: dict[str, Tensor]) -> str:
        """What to say when a step's gradient is not finite (nothing of that step is applied)."""
        values = ", ".join(f"{k} {v.item():.4g}" for k, v in losses.items())
        step = self.run_dir.checkpoint_step()
        kept = (
            f"the last good checkpoint, {self.run_dir.checkpoint} (step {step}), is kept: lower --{stage}-lr or "
            f"--max-grad-norm and continue with --resume"
            if step is not None
            else "no checkpoint had been written yet: lower the learning rate and start again"
        )
        return (
            f"training diverged at step {state['global_step'] + 1} ({stage} stage): the gradient is not finite "
            f"({values}); nothing of that step was applied; {kept}"
        )

    def _finish(self, data: Prepared, teacher_metrics: dict[str, float]) -> dict[str, Any]:
        c = self.config
        self.sharding.barrier()  # rank 0 has written the best student
        student = load_student(self.run_dir.student).to(self.device)
        kind = STUDENTS[c.student_type]
        T = student.config.time_steps
        self.log(
            f"evaluating the best student as a spiking network (simulate, T={T})"
            if kind.spiking
            else "evaluating the best student (dense)"
        )
        scored = self._score_spiking(student, data, T)
        solved = self._evaluate(lambda b: student(**b, mode="solve").logits, data, "student solve")
        metric = data.task.metric
        result = {
            "task": data.task.name,
            "metric": metric,
            "teacher": c.teacher,
            "teacher_score": teacher_metrics[metric],
            "teacher_metrics": teacher_metrics,
            "student_score": scored.metrics[metric],
            "student_metrics": scored.metrics,
            "student_solve_score": solved[metric],
            "student_solve_metrics": solved,
            "score_ratio": scored.metrics[metric] / teacher_metrics[metric] if teacher_metrics[metric] else None,
            "student_energy_ratio": scored.energy_ratio,
            "time_steps": T if kind.spiking else None,
            "train_for": kind.train_for(c),
            "energy_budget": c.energy_budget,
            "weight_bits": student.config.weight_bits,
            "student_type": c.student_type,
            "student_layers": student.config.num_hidden_layers,
            "teacher_layers": student.config.teacher_layers,
            "num_parameters": sum(p.numel() for p in student.parameters()),
            "eqspike_version": __version__,
            "command": self.command,
            "selection": c.selection,
            "environment": self.environment,
        }
        if kind.reports_energy and self.sharding.is_main:  # both conventions (eqspike energy RUN: the report)
            from eqspike.analysis.energy_report import energy_report, metrics_energy

            main_split = data.splits[data.task.main_split]
            result.update(metrics_energy(energy_report(student, data.task, main_split, [T], c.eval_batch_size, self.device), T))
        self.run_dir.write_result(result)
        name = (
            f"spiking {kind.kind} student (T={T}, {student.config.weight_bits}-bit weights)" if kind.spiking else "dense student"
        )
        self.log(
            f"teacher {metric} {result['teacher_score']:.4f} | {name} {metric} {result['student_score']:.4f}, energy "
            f"{scored.energy_ratio:.3f} x the teacher's"
            + (f" | rate map (solve) {result['student_solve_score']:.4f}" if kind.spiking else "")
        )
        self.log(f"run directory: {self.run_dir.root}")
        return result
