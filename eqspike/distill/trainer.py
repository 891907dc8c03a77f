"""TODO docstring"""

from __future__ import annotations

import dataclasses
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any
import torch
from torch import Tensor
import eqspike
from eqspike.config import RunConfig
from eqspike.data import batch_order, iterate_batches
from eqspike.errors import EqspikeError
from eqspike.runtime.distributed import initialise, shard
from eqspike.analysis.energy import StudentEnergy, spikelm_energy_pj
from eqspike.evaluation import evaluate
from eqspike.students.spiking_bert import SpikingBertForSequenceClassification
from eqspike.students.common import uniform_layer_map
from eqspike.teacher.store import Teacher, load_teacher, teacher_name
from eqspike.teacher.targets import teacher_targets
from eqspike.runtime.progress import StepLog, progress
from eqspike.runtime.devices import autocast, set_seed
from eqspike.runtime.optim import linear_schedule, make_optimizer
from eqspike.distill.losses import Share, gold_loss, intermediate_loss, prediction_loss, spike_energy
from eqspike.distill.prepare import Prepared, prepare_data
from eqspike.distill.run_directory import RunDirectory, RunDirectoryError
from eqspike.students import load_student


STAGES = ("intermediate", "prediction")


# Under an energy budget B the loss adds lambda x E, the estimated energy ratio of the step, and after
# every step lambda <- max(0, lambda + ENERGY_DUAL_STEP (E - B)) (dual ascent on the constraint E <= B).
ENERGY_DUAL_STEP = 1.0


class TrainingDiverged(EqspikeError):
    """A loss or gradient became non-finite; the run stopped with its last good checkpoint."""


def default_output_dir(config: RunConfig) -> Path:
    teacher = teacher_name(config.teacher) if config.teacher else "teacher"
    task = config.task or (Path(config.train_file).resolve().parent.name if config.train_file else "data")
    layers = config.student_layers or "all"
    if config.student_type == "spikelm":
        return Path("runs") / f"{task}-{teacher}-L{layers}-spikelm-T{config.spikelm_time_steps}"
    bits = {32: "fp", 1: "1bit", 1.58: "1.58bit"}[config.weight_bits]
    return Path("runs") / f"{task}-{teacher}-L{layers}-T{config.time_steps}-{bits}"


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
            return StageOutput(out.hidden_values, out.attention_scores, None, out.rates if self.with_rates else None)
        out = self.student(**inputs)
        return StageOutput(None, None, out.logits, out.rates if self.with_rates else None)


@dataclass
class SpikingEvaluation:
    metrics: dict[str, float]
    energy_ratio: float  # energy per example / the teacher's
    spike_factor: float | None = None  # the spikes' energy / the estimate from the quantized rates


@dataclass
class StageOutput:
    hidden_values: list[Tensor] | None
    attention_scores: list[Tensor] | None
    logits: Tensor | None
    rates: dict[str, Tensor] | None


class Distiller:
    """``Distiller(config).run()`` distils a spiking student and writes the run directory."""

    def __init__(self, config: RunConfig, log=print) -> None:
        self.config = config
        self.sharding, self.device = initialise(config.device)
        self.log = log if self.sharding.is_main else (lambda *_: None)
        self.run_dir = RunDirectory(config.output_dir or default_output_dir(config), writes=self.sharding.is_main)
        self.teacher_cache = None
        self._energy_model: StudentEnergy | None = None  # set for a student trained under an energy budget

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

    # -------------------------------------------------------------- building the student
    def build_student(self, teacher: Teacher, data: Prepared):
        c = self.config
        if c.student_type == "spikelm":
            from eqspike.students.spikelm import SpikeLMForSequenceClassification

            set_seed(c.seed)
            student = SpikeLMForSequenceClassification.from_teacher(
                teacher.model, c.student_layers, time_steps=c.spikelm_time_steps, reset=c.spikelm_reset, teacher=c.teacher)
            return student.to(self.device)  # amplitudes alpha_t are set by the first training batch
        for_time_steps = c.train_for == "time_steps"
        fields = dict(time_steps=c.time_steps, signed=c.signed, rounding=c.rounding, hysteresis=c.hysteresis,
                      quantize_rates=for_time_steps,
                      feedback=c.feedback, weight_bits=c.weight_bits, threshold_quantile=c.threshold_quantile,
                      forward_mode=c.train_forward, solver=c.solver, teacher=c.teacher)
        student = SpikingBertForSequenceClassification.from_teacher(teacher.model, c.student_layers, **fields)
        if c.student_init == "random":
            set_seed(c.seed)
            student = SpikingBertForSequenceClassification(student.config)
        calibration = iterate_batches(data.train, batch_order(len(data.train), c.batch_size, c.seed, -1))
        batches, seen = [], 0
        for batch in calibration:
            batches.append(batch)
            seen += len(batch["input_ids"])
            if seen >= c.calibration_examples:
                break
        student.calibrate_thresholds(batches, time_steps=c.time_steps if for_time_steps else None)
        student.train_thresholds(for_time_steps)
        return student.to(self.device)

    def _global_batch(self, data: Prepared, stage_index: int, step: int, steps_per_epoch: int) -> list[int]:
        """The indices of the global batch of one optimiser step (the same for any number of ranks)."""
        epoch, position = divmod(step, steps_per_epoch)
        return batch_order(len(data.train), self.config.batch_size, self.config.seed, 1000 * stage_index + epoch)[position]

    def step(self, forward, teacher: Teacher, data: Prepared, indices: list[int], layers: list[int], stage: str,
             energy_weight: float = 0.0, spike_factor: float = 1.0) -> dict[str, Tensor]:
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
            batch = {k: v.to(self.device) for k, v in data.train.collate([data.train[i] for i in mine]).items()}
            synchronise = number == len(parts) or not hasattr(forward, "no_sync")
            with nullcontext() if synchronise else forward.no_sync():
                losses = self._losses(forward, teacher, batch, layers, stage, data.task.is_regression,
                                      dataclasses.replace(share, real=real), energy_weight * spike_factor)
                losses["loss"].backward()
            for name, value in losses.items():
                totals[name] = totals[name] + value.detach() if name in totals else value.detach()
        if "energy" in totals:  # + what stays multiply-accumulate (the same on every rank)
            dense = sum(self._energy_model.dense_pj(n, self.config.time_steps) for n in lengths)
            totals["energy"] = spike_factor * totals["energy"] + dense / share.teacher_pj
        return totals

    # -------------------------------------------------------------- main loop
    def run(self) -> dict[str, Any]:
        c, sharding = self.config, self.sharding
        self.run_dir.claim(c.resume, c.overwrite, self.log)
        sharding.barrier()  # rank 0 has repaired what a crash left
        resume_state = self.run_dir.resume_state() if c.resume else None
        set_seed(c.seed)
        data = prepare_data(c, self.log)
        teacher = self._on_main_first(lambda: load_teacher(c, data.task, self.device, data.splits, data.train, self.log))
        self.run_dir.start(c, resuming=resume_state is not None)
        if sharding.distributed:
            self.log(f"distributed: {sharding.world_size} processes ({torch.distributed.get_backend()}), "
                     f"{c.batch_size} examples per step in all; evaluation batches are shared out; "
                     f"rank 0 logs and writes checkpoints")
        teacher_logits = lambda batch: teacher.model(**batch).logits  # noqa: E731
        teacher_metrics = self._evaluate(teacher_logits, data, "teacher dev")
        self.log(f"teacher: dev {data.task.metric} {teacher_metrics[data.task.metric]:.4f}")

        student = self.build_student(teacher, data)
        if resume_state is not None:
            student.load_state_dict(self.run_dir.load_checkpoint("student.pt", self.device))
        student.train()
        if c.energy_budget is not None:
            self._energy_model = StudentEnergy.of(student.config)
        layers = student.config.teacher_layers if c.student_init == "teacher" else uniform_layer_map(
            teacher.model.config.num_hidden_layers, student.config.num_hidden_layers)

        steps_per_epoch = -(-len(data.train) // c.batch_size)
        stage_steps = {"intermediate": round(c.intermediate_epochs * steps_per_epoch),
                       "prediction": round(c.prediction_epochs * steps_per_epoch)}
        if self._task_recipe:  # SpikeLM's own recipe: fine-tune on the task loss only
            stage_steps["intermediate"] = 0
        state = resume_state or {"stage": 0, "stage_step": 0, "global_step": 0, "best_score": None, "best_step": None,
                                 "best_key": None, "energy_weight": 0.0, "spike_factor": 1.0}
        if c.cache_teacher and not self._task_recipe:
            self.teacher_cache = self._open_teacher_cache(teacher, data, layers,
                                                          with_layers=state["stage"] == 0 and stage_steps["intermediate"] > 0)
        if c.student_type == "spikelm" and resume_state is None:
            # alpha_t = 2 mean|u_t| of the first global batch, the same on every rank
            first_stage = 0 if stage_steps["intermediate"] else 1
            first = data.train.collate([data.train[i] for i in self._global_batch(data, first_stage, 0, steps_per_epoch)])
            with torch.no_grad():
                student(**{k: first[k].to(self.device) for k in ("input_ids", "attention_mask", "token_type_ids")})
        eval_every = max(1, steps_per_epoch // c.evals_per_epoch)
        started = time.time()

        for stage_index in range(state["stage"], len(STAGES)):
            stage = STAGES[stage_index]
            total = stage_steps[stage]
            # The energy budget constrains the prediction stage; the intermediate stage aligns the student
            # with the teacher's layers, which a budget would fight.
            budget = c.energy_budget if stage == "prediction" and self._energy_model is not None else None
            forward = StageForward(student, stage, with_rates=budget is not None)
            if sharding.distributed:
                forward = torch.nn.parallel.DistributedDataParallel(
                    forward, device_ids=[self.device] if self.device.type == "cuda" else None,
                    broadcast_buffers=False, find_unused_parameters=True)
            lr = c.intermediate_lr if stage == "intermediate" else c.prediction_lr
            optimizer = make_optimizer(student.named_parameters(), lr, c.weight_decay, c.threshold_lr)
            schedule = linear_schedule(optimizer, max(1, total), c.warmup_ratio)
            first = state["stage_step"] if stage_index == state["stage"] else 0
            if first and resume_state is not None:
                checkpoint = self.run_dir.load_checkpoint("optimizer.pt", self.device)
                optimizer.load_state_dict(checkpoint["optimizer"])
                schedule.load_state_dict(checkpoint["schedule"])
                self.log(f"resume: {stage} stage at step {first}/{total} (global step {state['global_step']})")
            if budget is not None and first == 0:  # the spikes-per-rate factor of the starting student
                self._evaluate_and_select(student, data, state)
            bar = progress(total=total, desc=f"distill {stage}", disable=None if sharding.is_main else True)
            bar.update(first)
            log_lines = StepLog(f"distill {stage}", total, c.logging_steps, c.batch_size, self.log, first,
                                enabled=None if sharding.is_main else False)
            for step in range(first, total):
                indices = self._global_batch(data, stage_index, step, steps_per_epoch)
                losses = self.step(forward, teacher, data, indices, layers, stage, state["energy_weight"], state["spike_factor"])
                norm = torch.nn.utils.clip_grad_norm_(student.parameters(), c.max_grad_norm)
                if not torch.isfinite(norm):  # the same on every rank (gradients are reduced): all stop
                    bar.close()
                    raise TrainingDiverged(self._divergence(state, stage, sharding.mean_of(losses)))
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                losses = sharding.mean_of(losses)
                if budget is not None:  # dual ascent: the weight grows while the estimate is over budget
                    state["energy_weight"] = max(0.0, state["energy_weight"] + ENERGY_DUAL_STEP * (
                        losses["energy"].item() - budget))
                    losses["energy_weight"] = torch.tensor(state["energy_weight"])
                state.update(stage=stage_index, stage_step=step + 1, global_step=state["global_step"] + 1)
                bar.update(1)
                bar.set_postfix(loss=f"{losses['loss'].item():.4f}")
                log_lines.update(step + 1, schedule.get_last_lr()[0],
                                 **{k: losses[k].item() for k in ("loss", "energy") if k in losses})
                if state["global_step"] % c.logging_steps == 0:
                    self.run_dir.log({"step": state["global_step"], "stage": stage, "lr": schedule.get_last_lr()[0],
                                       "elapsed_s": round(time.time() - started, 2),
                                       **{k: round(v.item(), 6) for k, v in losses.items()}})
                if stage == "prediction" and ((step + 1) % eval_every == 0 or step + 1 == total):
                    self._evaluate_and_select(student, data, state)
                interrupted = c.max_steps is not None and state["global_step"] >= c.max_steps
                if (step + 1) % c.save_steps == 0 or step + 1 == total or interrupted:
                    self._save_checkpoint(student, optimizer, schedule, state)
                if interrupted:
                    bar.close()
                    self.log(f"stopped after {state['global_step']} steps (max_steps); continue with --resume")
                    return {"status": "interrupted", **state}
            bar.close()
            state.update(stage=stage_index + 1, stage_step=0)
            self._save_checkpoint(student, optimizer, schedule, state)
            self.log(f"{stage} stage done ({total} steps)")
        if state["best_score"] is None:  # no prediction stage: the final student is the one kept
            self._evaluate_and_select(student, data, state)
        return self._finish(data, teacher, teacher_metrics)

    def _losses(self, forward, teacher: Teacher, batch: dict[str, Tensor], layers: list[int], stage: str,
                regression: bool, share: Share, energy_weight: float) -> dict[str, Tensor]:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        with autocast(self.config.precision, self.device):  # losses below are computed in float32
            targets = None if self._task_recipe else self._teacher_targets(teacher, batch, inputs, layers)
            out = forward(**inputs)
        if self._task_recipe:
            gold = gold_loss(out.logits, batch["labels"], regression, share)
            return {"loss": gold, "gold": gold.detach()}
        if stage == "intermediate":
            losses = intermediate_loss(out, targets, batch["attention_mask"], self.config, share)
        else:
            losses = prediction_loss(out.logits, targets["logits"], batch["labels"], regression, self.config, share)
        if out.rates is not None:  # under an energy budget
            energy = spike_energy(out.rates, batch["attention_mask"], self._energy_model, self.config.time_steps, share)
            losses["loss"] = losses["loss"] + energy_weight * energy
            losses["energy"] = energy.detach()
        return losses

    def _divergence(self, state: dict[str, Any], stage: str, losses: dict[str, Tensor]) -> str:
        """What to say when a step's gradient is not finite (nothing of that step is applied)."""
        values = ", ".join(f"{k} {v.item():.4g}" for k, v in losses.items())
        step = self.run_dir.checkpoint_step()
        kept = (f"the last good checkpoint, {self.run_dir.checkpoint} (step {step}), is kept: lower --{stage}-lr or "
                f"--max-grad-norm and continue with --resume"
                if step is not None else "no checkpoint had been written yet: lower the learning rate and start again")
        return (f"training diverged at step {state['global_step'] + 1} ({stage} stage): the gradient is not finite "
                f"({values}); nothing of that step was applied; {kept}")

    def _teacher_targets(self, teacher: Teacher, batch: dict[str, Tensor], inputs: dict[str, Tensor], layers: list[int]):
        """The teacher's targets for a batch: read from the cache when there is one, else computed."""
        if self.teacher_cache is not None:
            return self.teacher_cache.targets(batch["index"].tolist(), inputs["input_ids"].shape[1], self.device)
        with torch.no_grad():
            return teacher_targets(teacher.model, inputs, layers)

    def _open_teacher_cache(self, teacher: Teacher, data: Prepared, layers: list[int], with_layers: bool):
        from eqspike.teacher.cache import build_or_open

        c = self.config
        root = Path(c.teacher_cache_dir) if c.teacher_cache_dir else Path(c.teacher_store) / "cache"
        return self._on_main_first(lambda: build_or_open(
            teacher.model, data.train, layers, root, with_layers=with_layers, dtype=c.teacher_cache_dtype,
            batch_size=c.eval_batch_size, device=self.device, max_gb=c.teacher_cache_max_gb, log=self.log))

    @property
    def _task_recipe(self) -> bool:
        return self.config.student_type == "spikelm" and self.config.spikelm_recipe == "task"

    def _evaluate(self, logits_fn, data: Prepared, desc: str) -> dict[str, float]:
        """Dev metrics, with the batches shared out over the ranks (every rank gets them all)."""
        return evaluate(logits_fn, data.task, data.splits, self.config.eval_batch_size, self.device, desc, self.sharding)

    def _evaluate_and_select(self, student, data: Prepared, state: dict[str, Any]) -> None:
        """Dev score; rank 0 saves the best student so far. A student trained for its time steps is
        scored as it is deployed: simulated for T steps, its energy measured from its spikes. Under an
        energy budget the best student is the best-scoring one within budget (while none is, the one
        with the least energy). A student trained for T = infinity is scored at its equilibrium (solve)."""
        c = self.config
        student.eval()
        energy = None
        if c.student_type == "eqspike" and c.train_for == "time_steps":
            evaluation = self._spiking_evaluation(student, data, c.time_steps, c.energy_budget is not None)
            metrics, energy, mode = evaluation.metrics, evaluation.energy_ratio, f"simulate T={c.time_steps}"
            if evaluation.spike_factor is not None:
                state["spike_factor"] = evaluation.spike_factor
        else:
            metrics, mode = self._evaluate(lambda b: student(**b, mode="solve").logits, data, "student dev"), "solve"
        student.train()
        score = metrics[data.task.metric]
        self.run_dir.log({"step": state["global_step"], "eval": metrics, "mode": mode, "energy_ratio": energy})
        feasible = c.energy_budget is None or energy <= c.energy_budget
        key = [feasible, score if feasible else -energy]
        improved = state.get("best_key") is None or key > state["best_key"]
        self.log(f"step {state['global_step']}: dev {data.task.metric} {score:.4f} ({mode}"
                 + (f", energy {energy:.3f}" if energy is not None else "") + ")" + (" *best*" if improved else ""))
        if improved:
            state.update(best_score=score, best_step=state["global_step"], best_key=key)
            self.run_dir.save_student(student, data.tokenizer)

    def _spiking_evaluation(self, student, data: Prepared, T: int, spike_factor: bool = False) -> SpikingEvaluation:
        """Dev metrics of the student run as a spiking network for T steps, and its energy per example
        relative to the teacher's, from the spikes it fired (eqspike.energy; every dev split).
        ``spike_factor``: also the ratio of the spikes' energy to the estimate from the T-step
        quantized rates (T |a| spikes a neuron; the simulation adds spikes that cancel)."""
        if self.config.student_type == "spikelm":
            student.count_spikes(True)
            metrics = self._evaluate(lambda b: student(**b).logits, data, f"spiking T={T}")
            accumulates = sum(self.sharding.gather(student.spike_statistics()[1]))
            student.count_spikes(False)
            lengths = [len(x) for split in data.splits.values() for x in split.input_ids]
            pj = spikelm_energy_pj(student.config, accumulates, lengths, T)
            return SpikingEvaluation(metrics, pj / sum(map(StudentEnergy.of(student.config).teacher_pj, lengths)))
        model, spent = StudentEnergy.of(student.config), {"spikes": 0.0, "dense": 0.0, "teacher": 0.0, "rates": 0.0}

        def logits(batch: dict[str, Tensor]) -> Tensor:
            mask = batch["attention_mask"]
            out = student(**batch, mode="simulate", time_steps=T, count_spikes=True)
            spent["spikes"] += float(model.accumulate_pj(out.spike_counts, mask).sum())
            spent["dense"] += sum(model.dense_pj(n, T) for n in mask.sum(1).tolist())
            spent["teacher"] += sum(map(model.teacher_pj, mask.sum(1).tolist()))
            if spike_factor:
                rates = student(**batch, mode="solve", time_steps=T).rates
                spent["rates"] += float(model.accumulate_pj({k: v.abs() * T for k, v in rates.items()}, mask).sum())
            return out.logits

        metrics = self._evaluate(logits, data, f"spiking T={T}")
        total = {key: sum(part[key] for part in self.sharding.gather(spent)) for key in spent}
        factor = total["spikes"] / total["rates"] if spike_factor and total["rates"] > 0 else None
        return SpikingEvaluation(metrics, (total["spikes"] + total["dense"]) / total["teacher"], factor)

    def _save_checkpoint(self, student, optimizer, schedule, state: dict[str, Any]) -> None:
        self.run_dir.save_checkpoint(student.state_dict(), {"optimizer": optimizer.state_dict(),
                                                            "schedule": schedule.state_dict()}, state)

    def _finish(self, data: Prepared, teacher: Teacher, teacher_metrics: dict[str, float]) -> dict[str, Any]:
        c = self.config
        self.sharding.barrier()  # rank 0 has written the best student
        student = load_student(self.run_dir.student).to(self.device)
        T = student.config.time_steps
        self.log(f"evaluating the best student as a spiking network (simulate, T={T})")
        evaluation = self._spiking_evaluation(student, data, T)
        spiking, energy_ratio = evaluation.metrics, evaluation.energy_ratio
        solved = self._evaluate(lambda b: student(**b, mode="solve").logits, data, "student solve")
        metric = data.task.metric
        result = {
            "task": data.task.name,
            "metric": metric,
            "teacher": c.teacher,
            "teacher_score": teacher_metrics[metric],
            "teacher_metrics": teacher_metrics,
            "student_score": spiking[metric],
            "student_metrics": spiking,
            "student_solve_score": solved[metric],
            "student_solve_metrics": solved,
            "score_ratio": spiking[metric] / teacher_metrics[metric] if teacher_metrics[metric] else None,
            "student_energy_ratio": energy_ratio,
            "time_steps": T,
            "train_for": c.train_for if c.student_type == "eqspike" else None,
            "energy_budget": c.energy_budget,
            "weight_bits": student.config.weight_bits,
            "student_type": c.student_type,
            "student_layers": student.config.num_hidden_layers,
            "teacher_layers": student.config.teacher_layers,
            "num_parameters": sum(p.numel() for p in student.parameters()),
            "eqspike_version": eqspike.__version__,
        }
        self.run_dir.write_result(result)
        self.log(f"teacher {metric} {result['teacher_score']:.4f} | spiking {c.student_type} student (T={T}, "
                 f"{student.config.weight_bits}-bit weights) {metric} {result['student_score']:.4f}, energy "
                 f"{energy_ratio:.3f} x the teacher's | rate map (solve) {result['student_solve_score']:.4f}")
        self.log(f"run directory: {self.run_dir.root}")
        return result
