"""Layerwise distillation of a BERT teacher into the spiking student (DESIGN.md §4).

Stage 1, intermediate layers:  L = w_h * sum_m MSE(v_m, H_T[k(m)]) + w_a * sum_m MSE(S_m, S_T[k(m)])
    v_m: decoded values of the student's embeddings (m = 0) and block outputs at equilibrium;
    S_m: pre-softmax attention scores; k(m): the uniform layer map. Pad tokens (and pairs with a pad)
    are masked out of every term.
Stage 2, prediction layer:     L = tau^2 * CE(softmax(z_T / tau), softmax(z_S / tau)) + w_g * CE(z_S, y)
    (MSE to the teacher's output, and to the gold score, for regression).

Each stage has its own epochs, learning rate, optimiser and linear schedule. The gradient of every
term comes from implicit differentiation through the student's equilibrium. The dev metric is
measured ``evals_per_epoch`` times per prediction epoch (forward 'solve'); the best student is kept
in ``RUN_DIR/student``. The final score is that student run as a spiking network ('simulate', T steps).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

import eqspike
from eqspike.config import ConfigError, RunConfig, save_yaml
from eqspike.data import EncodedSplit, TaskData, batch_order, iterate_batches, load_task_data
from eqspike.evaluation import evaluate
from eqspike.model import SpikingBertForSequenceClassification, uniform_layer_map
from eqspike.teacher import Teacher, load_teacher, load_tokenizer, locate, teacher_name, teacher_targets
from eqspike.training import atomic_directory, linear_schedule, make_optimizer, progress, resolve_device, set_seed

STAGES = ("intermediate", "prediction")
CHECKPOINT = "checkpoint"
STUDENT = "student"


class RunDirectoryError(ConfigError):
    """The run directory cannot be used as asked."""


# ----------------------------------------------------------------------------- losses
def masked_mse(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the positions where ``mask`` (broadcastable, 0/1) is 1."""
    mask = mask.to(student.dtype).expand_as(student)
    return ((student - teacher) ** 2 * mask).sum() / mask.sum().clamp_min(1.0)


def intermediate_loss(out, targets: dict[str, Any], attention_mask: Tensor, config: RunConfig) -> dict[str, Tensor]:
    tokens = attention_mask[:, :, None]
    pairs = (attention_mask[:, None, :, None] * attention_mask[:, None, None, :])
    hidden = sum(masked_mse(v, h, tokens) for v, h in zip(out.hidden_values, targets["hidden"]))
    attention = sum(masked_mse(s, t, pairs) for s, t in zip(out.attention_scores, targets["scores"]))
    return {"loss": config.hidden_weight * hidden + config.attention_weight * attention,
            "hidden": hidden.detach(), "attention": attention.detach()}


def prediction_loss(logits: Tensor, teacher_logits: Tensor, labels: Tensor, regression: bool, config: RunConfig) -> dict[str, Tensor]:
    if regression:
        soft = F.mse_loss(logits.view(-1), teacher_logits.view(-1))
        gold = F.mse_loss(logits.view(-1), labels.float())
    else:
        tau = config.temperature
        soft = -(F.softmax(teacher_logits / tau, -1) * F.log_softmax(logits / tau, -1)).sum(-1).mean() * tau**2
        gold = F.cross_entropy(logits, labels)
    return {"loss": soft + config.gold_weight * gold, "soft": soft.detach(), "gold": gold.detach()}


# ----------------------------------------------------------------------------- the run
@dataclass
class Prepared:
    task: TaskData
    tokenizer: Any
    train: EncodedSplit
    splits: dict[str, EncodedSplit]


def default_output_dir(config: RunConfig) -> Path:
    teacher = teacher_name(config.teacher) if config.teacher else "teacher"
    task = config.task or (Path(config.train_file).resolve().parent.name if config.train_file else "data")
    layers = config.student_layers or "all"
    if config.student_type == "spikelm":
        return Path("runs") / f"{task}-{teacher}-L{layers}-spikelm-T{config.spikelm_time_steps}"
    bits = {32: "fp", 1: "1bit", 1.58: "1.58bit"}[config.weight_bits]
    return Path("runs") / f"{task}-{teacher}-L{layers}-T{config.time_steps}-{bits}"


def load_student(directory: str | Path):
    """Load a student of either kind from its folder (config.json names the kind)."""
    from eqspike.baselines.spikelm import MODEL_TYPE as SPIKELM, SpikeLMForSequenceClassification

    config = Path(directory) / "config.json"
    kind = json.loads(config.read_text()).get("model_type") if config.is_file() else None
    if kind == SPIKELM:
        return SpikeLMForSequenceClassification.from_pretrained(directory)
    return SpikingBertForSequenceClassification.from_pretrained(directory)


def prepare_data(config: RunConfig, log=print) -> Prepared:
    task = load_task_data(config.task, config.data_dir, config.train_file, config.validation_file)
    if config.max_train_examples:
        task.train = task.train[: config.max_train_examples]
    if config.max_eval_examples:
        task.validation = {k: v[: config.max_eval_examples] for k, v in task.validation.items()}
    if not task.train or not all(task.validation.values()):
        raise ConfigError(f"task {task.name!r} has no training or validation examples")
    tokenizer = load_tokenizer(locate(config.teacher)) if config.teacher else None
    if tokenizer is None:
        raise ConfigError("no teacher: give --teacher (a hub id such as bert-base-uncased, or a local directory)")
    train = EncodedSplit(task.train, tokenizer, config.max_seq_length)
    splits = {name: EncodedSplit(examples, tokenizer, config.max_seq_length) for name, examples in task.validation.items()}
    log(f"data: {task.name}, {len(train)} train / " + ", ".join(f"{len(s)} {n}" for n, s in splits.items())
        + f", {task.num_labels} {'output' if task.is_regression else 'labels'}, metric {task.metric}")
    return Prepared(task, tokenizer, train, splits)


class Distiller:
    """``Distiller(config).run()`` distils a spiking student and writes the run directory."""

    def __init__(self, config: RunConfig, log=print) -> None:
        self.config = config
        self.log = log
        self.output_dir = Path(config.output_dir) if config.output_dir else default_output_dir(config)
        self.device = resolve_device(config.device)

    # -------------------------------------------------------------- run directory
    def _claim_output_dir(self) -> dict[str, Any] | None:
        """Check the run directory before anything is written; return the checkpoint state to resume."""
        out, config = self.output_dir, self.config
        if config.resume and config.overwrite:
            raise RunDirectoryError("--resume and --overwrite contradict each other; pass one")
        state_file = out / CHECKPOINT / "state.json"
        if config.resume:
            if not state_file.is_file():
                raise RunDirectoryError(f"cannot resume: {out} has no checkpoint ({state_file} is missing)")
            return json.loads(state_file.read_text())
        if out.exists() and any(out.iterdir()):
            if not config.overwrite:
                raise RunDirectoryError(
                    f"output directory {out} already exists; pass --resume to continue that run or --overwrite to replace it"
                )
        return None

    def _start_output_dir(self, resuming: bool) -> None:
        out = self.output_dir
        if self.config.overwrite and out.exists() and not resuming:
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(self.config, out / "config.yaml")

    def _log_metrics(self, record: dict[str, Any]) -> None:
        with (self.output_dir / "metrics.jsonl").open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    # -------------------------------------------------------------- building the student
    def build_student(self, teacher: Teacher, data: Prepared):
        c = self.config
        if c.student_type == "spikelm":
            from eqspike.baselines.spikelm import SpikeLMForSequenceClassification

            set_seed(c.seed)
            student = SpikeLMForSequenceClassification.from_teacher(
                teacher.model, c.student_layers, time_steps=c.spikelm_time_steps, reset=c.spikelm_reset, teacher=c.teacher)
            return student.to(self.device)  # amplitudes alpha_t are set by the first training batch
        fields = dict(time_steps=c.time_steps, signed=c.signed, feedback=c.feedback, weight_bits=c.weight_bits,
                      threshold_quantile=c.threshold_quantile, forward_mode=c.train_forward, solver=c.solver,
                      teacher=c.teacher)
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
        student.calibrate_thresholds(batches)
        return student.to(self.device)

    # -------------------------------------------------------------- main loop
    def run(self) -> dict[str, Any]:
        c = self.config
        resume_state = self._claim_output_dir()
        set_seed(c.seed)
        data = prepare_data(c, self.log)
        teacher = load_teacher(c, data.task, self.device, data.splits, data.train, self.log)
        self._start_output_dir(resuming=resume_state is not None)
        teacher_logits = lambda batch: teacher.model(**batch).logits  # noqa: E731
        teacher_metrics = evaluate(teacher_logits, data.task, data.splits, c.eval_batch_size, self.device, "teacher dev")
        self.log(f"teacher: dev {data.task.metric} {teacher_metrics[data.task.metric]:.4f}")

        student = self.build_student(teacher, data)
        if resume_state is not None:
            student.load_state_dict(torch.load(self.output_dir / CHECKPOINT / "student.pt", map_location=self.device))
        student.train()
        layers = student.config.teacher_layers if c.student_init == "teacher" else uniform_layer_map(
            teacher.model.config.num_hidden_layers, student.config.num_hidden_layers)

        steps_per_epoch = -(-len(data.train) // c.batch_size)
        stage_steps = {"intermediate": round(c.intermediate_epochs * steps_per_epoch),
                       "prediction": round(c.prediction_epochs * steps_per_epoch)}
        if self._task_recipe:  # SpikeLM's own recipe: fine-tune on the task loss only
            stage_steps["intermediate"] = 0
        state = resume_state or {"stage": 0, "stage_step": 0, "global_step": 0, "best_score": None, "best_step": None}
        eval_every = max(1, steps_per_epoch // c.evals_per_epoch)
        started = time.time()

        for stage_index in range(state["stage"], len(STAGES)):
            stage = STAGES[stage_index]
            total = stage_steps[stage]
            lr = c.intermediate_lr if stage == "intermediate" else c.prediction_lr
            optimizer = make_optimizer(student.named_parameters(), lr, c.weight_decay)
            schedule = linear_schedule(optimizer, max(1, total), c.warmup_ratio)
            first = state["stage_step"] if stage_index == state["stage"] else 0
            if first and resume_state is not None:
                checkpoint = torch.load(self.output_dir / CHECKPOINT / "optimizer.pt", map_location=self.device)
                optimizer.load_state_dict(checkpoint["optimizer"])
                schedule.load_state_dict(checkpoint["schedule"])
                self.log(f"resume: {stage} stage at step {first}/{total} (global step {state['global_step']})")
            bar = progress(total=total, desc=f"distill {stage}")
            bar.update(first)
            for step in range(first, total):
                epoch, position = divmod(step, steps_per_epoch)
                indices = batch_order(len(data.train), c.batch_size, c.seed, 1000 * stage_index + epoch)[position]
                batch = {k: v.to(self.device) for k, v in data.train.collate([data.train[i] for i in indices]).items()}
                losses = self._step(student, teacher, batch, layers, stage, data.task.is_regression)
                losses["loss"].backward()
                torch.nn.utils.clip_grad_norm_(student.parameters(), c.max_grad_norm)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                state.update(stage=stage_index, stage_step=step + 1, global_step=state["global_step"] + 1)
                bar.update(1)
                bar.set_postfix(loss=f"{losses['loss'].item():.4f}")
                if state["global_step"] % c.logging_steps == 0:
                    self._log_metrics({"step": state["global_step"], "stage": stage, "lr": schedule.get_last_lr()[0],
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

    def _step(self, student, teacher: Teacher, batch: dict[str, Tensor], layers: list[int], stage: str, regression: bool):
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        targets = teacher_targets(teacher.model, inputs, layers)
        out = student(**inputs, output_attention_scores=stage == "intermediate")
        if stage == "intermediate":
            return intermediate_loss(out, targets, batch["attention_mask"], self.config)
        if self._task_recipe:
            gold = F.mse_loss(out.logits.view(-1), batch["labels"].float()) if regression else F.cross_entropy(out.logits, batch["labels"])
            return {"loss": gold, "gold": gold.detach()}
        return prediction_loss(out.logits, targets["logits"], batch["labels"], regression, self.config)

    @property
    def _task_recipe(self) -> bool:
        return self.config.student_type == "spikelm" and self.config.spikelm_recipe == "task"

    def _evaluate_and_select(self, student, data: Prepared, state: dict[str, Any]) -> None:
        c = self.config
        student.eval()
        metrics = evaluate(lambda b: student(**b, mode="solve").logits, data.task, data.splits,
                           c.eval_batch_size, self.device, "student dev")
        student.train()
        score = metrics[data.task.metric]
        self._log_metrics({"step": state["global_step"], "eval": metrics, "mode": "solve"})
        improved = state["best_score"] is None or score > state["best_score"]
        self.log(f"step {state['global_step']}: dev {data.task.metric} {score:.4f} (solve)" + (" *best*" if improved else ""))
        if improved:
            state.update(best_score=score, best_step=state["global_step"])
            with atomic_directory(self.output_dir / STUDENT) as staging:
                student.save_pretrained(staging, data.tokenizer)

    def _save_checkpoint(self, student, optimizer, schedule, state: dict[str, Any]) -> None:
        with atomic_directory(self.output_dir / CHECKPOINT) as staging:
            torch.save(student.state_dict(), staging / "student.pt")
            torch.save({"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()}, staging / "optimizer.pt")
            (staging / "state.json").write_text(json.dumps(state, indent=2) + "\n")

    def _finish(self, data: Prepared, teacher: Teacher, teacher_metrics: dict[str, float]) -> dict[str, Any]:
        c = self.config
        student = load_student(self.output_dir / STUDENT).to(self.device)
        T = student.config.time_steps
        self.log(f"evaluating the best student as a spiking network (simulate, T={T})")
        spiking = evaluate(lambda b: student(**b, mode="simulate", time_steps=T).logits, data.task,
                           data.splits, c.eval_batch_size, self.device, f"spiking T={T}")
        solved = evaluate(lambda b: student(**b, mode="solve").logits, data.task, data.splits,
                          c.eval_batch_size, self.device, "student solve")
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
            "time_steps": T,
            "weight_bits": student.config.weight_bits,
            "student_type": c.student_type,
            "student_layers": student.config.num_hidden_layers,
            "teacher_layers": student.config.teacher_layers,
            "num_parameters": sum(p.numel() for p in student.parameters()),
            "eqspike_version": eqspike.__version__,
        }
        (self.output_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        self.log(f"teacher {metric} {result['teacher_score']:.4f} | spiking {c.student_type} student (T={T}, "
                 f"{student.config.weight_bits}-bit weights) {metric} {result['student_score']:.4f} | "
                 f"equilibrium (solve) {result['student_solve_score']:.4f}")
        self.log(f"run directory: {self.output_dir}")
        return result
