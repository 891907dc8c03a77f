"""Run configuration: one flat dataclass, read from YAML and overridden by command-line flags.

Every field is a YAML key and a flag (``student_layers`` <-> ``--student-layers``). Unknown YAML keys
are refused by name, with the closest valid key suggested.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from eqspike.core.equilibrium import FORWARD_MODES, SOLVERS
from eqspike.core.neurons import ROUNDINGS, NeuronConfig
from eqspike.core.quantization import parse_weight_bits
from eqspike.data.tasks import LABEL_TYPES
from eqspike.errors import (
    EqspikeError,
    check_choice,
    check_in_interval,
    check_int_at_least,
    check_non_negative,
    check_positive,
)
from eqspike.runtime.devices import PRECISIONS
from eqspike.runtime.files import write_atomic
from eqspike.runtime.optim import SCHEDULES
from eqspike.runtime.reporting import REPORT_TO
from eqspike.students import STUDENT_INITS, STUDENTS
from eqspike.students.spiking_bert_config import THRESHOLD_INITS, parse_spike_levels
from eqspike.teacher.base import FineTuneRecipe, TeacherSpec
from eqspike.teacher.cache import CACHE_DTYPES as TEACHER_CACHE_DTYPES

TRAIN_FOR = ("time_steps", "infinity")
STUDENT_TYPES = tuple(STUDENTS)  # --student-type: the registry's kinds
SELECTIONS = ("split", "dev")


class ConfigError(EqspikeError):
    """A configuration value or file that cannot be used (the message names it)."""


@dataclass
class RunConfig:
    # --- teacher and data
    teacher: str | None = None  # hub id or local directory
    task: str | None = None  # GLUE task name, "fortunes" or "fortunes-many"
    train_file: str | None = None
    validation_file: str | None = None
    data_dir: str | None = None  # original GLUE TSVs
    label_type: str = "auto"  # of --train-file data: "classification", "regression", or "auto" (inferred, and said)
    max_seq_length: int = 128
    max_train_examples: int | None = None  # subsample (quick experiments)
    max_eval_examples: int | None = None
    # what chooses the student kept and the teacher's best epoch: "split" (a seeded selection_fraction of the
    # training data, held out; the dev set scores only the final ones) or "dev" (selection on the dev set)
    selection: str = "split"
    selection_fraction: float = 0.1
    # --- teacher fine-tuning (when the teacher has no trained head for the task)
    teacher_store: str = "teachers"
    # A plain fine-tuning loop (AdamW 5e-5, constant rate, batch 32) with the best dev epoch kept and early
    # stopping; benchmarks/bench_teacher.py measures it against the 0.1 recipe (3 epochs, warm-up, linear decay).
    teacher_epochs: float = 10.0  # at most this many epochs (fewer when the dev score stops improving)
    teacher_lr: float = 5e-5
    teacher_batch_size: int = 32
    teacher_schedule: str = "constant"  # after warm-up: "constant", or "linear" decay to 0
    teacher_warmup_ratio: float = 0.0  # linear warm-up over this fraction of the teacher's steps
    teacher_patience: int = 2  # stop after this many epochs without a better dev score (0: never)
    # --- student
    student_type: str = "eqspike"  # "eqspike" (equilibrium, implicit gradients), "spikelm" (BPTT baseline) or "dense"
    student_layers: int | None = 4  # None: as many as the teacher
    student_hidden: int | None = None  # a narrower student (None: the teacher's width)
    student_heads: int | None = None  # its attention heads (None: the teacher's); must divide the teacher's
    student_intermediate: int | None = None  # its FFN width (None: the teacher's)
    student_init: str = "teacher"  # "teacher" (every k-th layer), "random", or a saved student's folder (warm start)
    time_steps: int = 8  # the deployment T: the student is trained for it (train_for) and scored at it
    train_for: str = "time_steps"  # "time_steps": the rates of T steps (T-step quantizer); "infinity": exact rates
    threshold_lr: float = 1e-2  # learning rate of the thresholds (trained with train_for: time_steps)
    energy_budget: float | None = None  # train for at most this energy per example, as a fraction of the teacher's
    energy_dual_step: float = 1.0  # after each step, lambda += this x (E - B) / B (dual ascent on the budget)
    rounding: str = "round"  # the neuron: "round" (fires at +-theta/2) or "trunc" (at +-theta)
    hysteresis: float = 0.0  # in thresholds, [0, 0.5]: a spike against the last one's sign needs (1/2 + h) theta
    signed: bool = True
    feedback: bool = False
    weight_bits: float = 32
    threshold_quantile: float = 0.999
    # the thresholds a student trained for T starts from: "quantizer" (the T-step quantizer's least-squares
    # threshold, low at small T: resolution) or "quantile" (the threshold_quantile, as for T = infinity: fewer spikes)
    threshold_init: str = "quantizer"
    # burst spikes: "KIND=B,...", the most spikes a neuron of each kind fires in one step (e.g. "intermediate=2")
    spike_levels: str | None = None
    calibration_examples: int = 256
    # how training finds the rates: "simulate" (the T-step spiking network; implicit gradient at its rates) or
    # "solve" (the fixed point of the rate map); None: simulate when trained for T, solve for infinity
    train_forward: str | None = None
    solver: str = "anderson"
    # --- the SpikeLM baseline (student_type: spikelm)
    spikelm_time_steps: int = 4
    spikelm_reset: str = "spikelm"  # their multiplicative update, or "soft"
    spikelm_recipe: str = "distill"  # same losses as eqspike, or "task": SpikeLM's own recipe (gold labels only)
    # --- distillation
    batch_size: int = 32  # examples per optimiser step, over all processes
    micro_batches: int = 1  # cut each process's share of a batch into this many parts (gradients accumulated)
    eval_batch_size: int = 64
    intermediate_epochs: float = 3.0
    intermediate_lr: float = 5e-5
    prediction_epochs: float = 3.0
    prediction_lr: float = 3e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    hidden_weight: float = 1.0
    attention_weight: float = 1.0
    temperature: float = 1.0
    gold_weight: float = 0.0  # weight of the gold-label loss in the prediction stage
    evals_per_epoch: int = 1  # evaluations on the selection splits (best-checkpoint selection) per prediction epoch
    # in stage 2 the student evaluated and kept is an exponential moving average of the weights trained,
    # theta_avg <- d theta_avg + (1 - d) theta after every step (0: off, the weights trained themselves)
    ema_decay: float = 0.0
    cache_teacher: bool = False  # run the teacher once over the training set and read its targets back
    teacher_cache_dir: str | None = None  # default: TEACHER_STORE/cache
    teacher_cache_dtype: str = "float16"  # or "float32" (exact, twice the disk)
    teacher_cache_max_gb: float = 20.0  # above it only the logits are cached (or, larger still, refused)
    # --- run
    output_dir: str | None = None
    overwrite: bool = False
    resume: bool = False
    seed: int = 42
    data_seed: int | None = None  # draws the subsamples and the selection split; None: the seed
    save_steps: int = 200
    logging_steps: int = 10
    report_to: str = "none"  # "tensorboard": the metrics.jsonl scalars also as TensorBoard events in RUN/tensorboard
    max_steps: int | None = None  # stop after this many optimiser steps in total (time-boxed runs)
    device: str = "auto"
    precision: str = "fp32"  # "bf16": autocast the teacher and the rate map in training (solvers stay float32)

    def __post_init__(self) -> None:
        try:
            self._validate()
        except ValueError as error:
            raise ConfigError(str(error)) from None

    def _validate(self) -> None:
        """Numbers in their ranges, then the choices (``_validate_choices``): the first bad value is named."""
        for name in (
            "max_seq_length",
            "teacher_batch_size",
            "time_steps",
            "batch_size",
            "eval_batch_size",
            "calibration_examples",
            "save_steps",
            "logging_steps",
            "evals_per_epoch",
            "micro_batches",
        ):
            check_int_at_least(name, getattr(self, name), 1)
        for name in (
            "student_layers",
            "student_hidden",
            "student_heads",
            "student_intermediate",
            "max_train_examples",
            "max_eval_examples",
            "max_steps",
        ):
            if getattr(self, name) is not None:
                check_int_at_least(name, getattr(self, name), 1)
        for name in ("output_dir", "teacher", "train_file", "validation_file", "data_dir", "teacher_store"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{name}={value!r} is not valid: it is empty; give a value or leave the setting out")
        for name in ("seed", "data_seed"):  # numpy's and torch's generators take seeds >= 0
            if getattr(self, name) is not None:
                check_int_at_least(name, getattr(self, name), 0)
        for name in (
            "intermediate_epochs",
            "prediction_epochs",
            "weight_decay",
            "hidden_weight",
            "attention_weight",
            "gold_weight",
            "max_grad_norm",
        ):
            check_non_negative(name, getattr(self, name))
        # a teacher fine-tuned for 0 epochs would be stored, untrained head and all, for later runs to reuse
        for name in ("teacher_epochs", "teacher_lr", "intermediate_lr", "prediction_lr", "temperature"):
            check_positive(name, getattr(self, name))
        for name in ("warmup_ratio", "teacher_warmup_ratio", "ema_decay"):
            if check_non_negative(name, getattr(self, name)) >= 1:
                raise ValueError(f"{name}={getattr(self, name)!r} is not valid; it must lie in [0, 1)")
        check_in_interval("threshold_quantile", self.threshold_quantile, 0.0, 1.0)
        self._validate_choices()

    def _validate_choices(self) -> None:
        """The named choices, each against its list, and the settings only some student kinds accept."""
        check_choice("selection", self.selection, SELECTIONS)
        check_choice("label_type", self.label_type, LABEL_TYPES)
        check_in_interval("selection_fraction", self.selection_fraction, 0.0, 1.0)
        check_choice("threshold_init", self.threshold_init, THRESHOLD_INITS)
        check_choice("student_type", self.student_type, STUDENT_TYPES)
        student = STUDENTS[self.student_type]
        levels = parse_spike_levels(self.spike_levels)
        self.spike_levels = ",".join(f"{kind}={b}" for kind, b in levels.items()) or None
        if levels and "spike_levels" not in student.kind_settings:
            raise ValueError(f"spike_levels is a setting of the eqspike student; student_type is {self.student_type!r}")
        if not isinstance(self.student_init, str) or not self.student_init.strip():
            raise ValueError(
                f"student_init={self.student_init!r} is not valid; choose one of: 'teacher', 'random', "
                f"or a saved student's folder"
            )
        check_choice("teacher_schedule", self.teacher_schedule, SCHEDULES)
        check_int_at_least("teacher_patience", self.teacher_patience, 0)
        check_choice("report_to", self.report_to, REPORT_TO)
        check_choice("train_for", self.train_for, TRAIN_FOR)
        check_choice("rounding", self.rounding, ROUNDINGS)
        NeuronConfig(signed=self.signed, rounding=self.rounding, hysteresis=self.hysteresis)  # validates them together
        check_positive("threshold_lr", self.threshold_lr)
        if self.energy_budget is not None:
            check_positive("energy_budget", self.energy_budget)
            if "energy_budget" not in student.kind_settings or student.train_for(self) != "time_steps":
                raise ValueError(
                    "energy_budget needs an eqspike student trained for its time steps "
                    f"(student_type='eqspike', train_for='time_steps'; got {self.student_type!r}, {self.train_for!r})"
                )
        check_int_at_least("spikelm_time_steps", self.spikelm_time_steps, 1)
        check_choice("spikelm_reset", self.spikelm_reset, ("spikelm", "soft"))
        check_choice("spikelm_recipe", self.spikelm_recipe, ("distill", "task"))
        if self.train_forward is not None:  # None is resolved where it is used (``training_forward``), so that
            check_choice("train_forward", self.train_forward, FORWARD_MODES)  # replace(train_for=...) re-resolves it
        check_positive("energy_dual_step", self.energy_dual_step)
        check_choice("solver", self.solver, SOLVERS)
        check_choice("device", self.device, ("auto", "cpu", "cuda"))
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("teacher_cache_dtype", self.teacher_cache_dtype, TEACHER_CACHE_DTYPES)
        check_positive("teacher_cache_max_gb", self.teacher_cache_max_gb)
        self.weight_bits = parse_weight_bits(self.weight_bits)
        if self.task is not None:
            self.task = self.task.lower()

    @property
    def training_forward(self) -> str:
        """How training finds the rates: ``train_forward``, or by default 'simulate' for a student trained
        for its time steps and 'solve' for one trained for T = infinity."""
        if self.train_forward is not None:
            return self.train_forward
        return "simulate" if self.train_for == "time_steps" else "solve"

    @property
    def student_widths(self) -> dict[str, int | None]:
        """The student's widths as its config names them (None: the teacher's)."""
        return {
            "hidden_size": self.student_hidden,
            "num_attention_heads": self.student_heads,
            "intermediate_size": self.student_intermediate,
        }

    @property
    def warm_start(self) -> str | None:
        """The saved student this run starts from (``student_init`` with ``{seed}`` replaced by the seed,
        so that each seed of ``--seeds`` starts from its own), or None for 'teacher' and 'random'."""
        if self.student_init in STUDENT_INITS:
            return None
        return self.student_init.replace("{seed}", str(self.seed))

    @property
    def task_loss_only(self) -> bool:
        """SpikeLM's own recipe: no distillation, the task loss alone."""
        return STUDENTS[self.student_type].task_loss_only(self)

    def teacher_spec(self) -> TeacherSpec:
        """What the teacher modules take from a run's settings."""
        recipe = FineTuneRecipe(
            epochs=self.teacher_epochs,
            lr=self.teacher_lr,
            batch_size=self.teacher_batch_size,
            schedule=self.teacher_schedule,
            patience=self.teacher_patience,
            max_seq_length=self.max_seq_length,
            warmup_ratio=self.teacher_warmup_ratio,
            weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm,
            seed=self.seed,
            selection=self.selection,
            selection_fraction=self.selection_fraction if self.selection == "split" else None,
        )
        return TeacherSpec(
            self.teacher,
            self.teacher_store,
            self.max_seq_length,
            recipe,
            self.eval_batch_size,
            self.logging_steps,
            self.max_train_examples,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


# One line per setting for --help (and the docs); the section a setting is listed under starts at the
# setting named in SECTIONS.
HELP = {
    "teacher": "the teacher: a Hugging Face hub id (bert-base-uncased) or a local transformers directory",
    "task": "a GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli), fortunes (the built-in example, 7 "
    "classes) or fortunes-many (28 classes of the same collection)",
    "train_file": "training data: CSV, TSV, JSON or JSON-lines with sentence1, optional sentence2, label",
    "validation_file": "dev data, in the same format as --train-file",
    "data_dir": "a folder with the original GLUE TSV files of --task (offline GLUE)",
    "label_type": "the labels of --train-file data: 'classification', 'regression', or 'auto' (inferred: words and whole "
    "numbers are classes, numbers written with a decimal point are scores; the run says which); 'auto' "
    "refuses labels that mix numbers and words or differ only by case",
    "max_seq_length": "tokens per example, longer ones truncated",
    "max_train_examples": "train on this many examples, drawn at random with the data seed: quick runs",
    "max_eval_examples": "evaluate on this many dev examples, drawn at random with the data seed",
    "selection": "what chooses the student kept and the teacher's best epoch: 'split' (a held-out part of the training "
    "data; the dev set scores only the final student and teacher) or 'dev' (selection on the dev set: its "
    "score is then optimistic)",
    "selection_fraction": "with --selection split: the fraction of the training examples held out for selection (drawn with the data seed)",
    "teacher_store": "folder of fine-tuned teachers, reused by later runs (teachers/README.md)",
    "teacher_epochs": "teacher fine-tuning: at most this many epochs",
    "teacher_lr": "teacher fine-tuning: AdamW learning rate",
    "teacher_batch_size": "teacher fine-tuning: examples per step",
    "teacher_schedule": "teacher fine-tuning: after warm-up, a 'constant' rate or 'linear' decay to 0",
    "teacher_warmup_ratio": "teacher fine-tuning: linear warm-up over this fraction of its steps",
    "teacher_patience": "teacher fine-tuning: stop after this many epochs without a better dev score (0: never)",
    "student_type": "'eqspike' (equilibrium, implicit gradients), 'spikelm' (the surrogate-gradient baseline) or "
    "'dense' (the eqspike student's architecture without spikes: the reference for the spikes' cost)",
    "student_layers": "spiking blocks of the student, initialised from every k-th teacher layer",
    "student_hidden": "hidden width of a student narrower than its teacher (default: the teacher's); its channels start "
    "from evenly spaced teacher channels, its hidden states are distilled through learned projections",
    "student_heads": "attention heads of a narrower student (default: the teacher's); must divide the teacher's: "
    "student head j starts from and is distilled to teacher head j x teacher heads / student heads",
    "student_intermediate": "FFN width of a narrower student (default: the teacher's; evenly spaced teacher units)",
    "student_init": "'teacher' (copy every k-th teacher layer), 'random', or a saved student of the same shape (a run "
    "directory or its student/ folder: a warm start from its weights, e.g. a dense student or one "
    "trained for another T; the thresholds are calibrated anew). '{seed}' in the path stands for the run's "
    "seed, so that each of --seeds starts from its own (e.g. runs/dense/seed-{seed})",
    "time_steps": "the deployment T: the student is trained for T steps and scored as a spiking network at T",
    "train_for": "'time_steps': train on the T-step quantized rates; 'infinity': on the exact equilibrium",
    "threshold_lr": "learning rate of the neurons' thresholds (trained with --train-for time_steps)",
    "energy_budget": "at most this energy per example, as a fraction of the teacher's (e.g. 0.1)",
    "energy_dual_step": "energy budget: after each step the penalty weight grows by this x (energy - budget) / budget",
    "rounding": "the neuron: 'round' fires at +-threshold/2 (count = round(T I/theta)); 'trunc' at +-threshold",
    "hysteresis": "in thresholds, 0-0.5: a spike against the last one's sign needs (1/2 + h) theta (fewer cancelling spikes)",
    "signed": "ternary spikes {-1, 0, +1} (--no-signed: binary)",
    "feedback": "add a feedback edge from the last block to the first (a true fixed point, solved by --solver)",
    "weight_bits": "weights of the encoder's linear layers: 32, 1.58 (ternary) or 1 (binary)",
    "threshold_quantile": "threshold calibration: the quantile of |activation| a threshold starts from",
    "spike_levels": "burst spikes, KIND=B,...: a neuron of that kind fires up to B spikes of theta / B a step, the "
    "resolution of B T steps in T (each spike counted in the energy); kinds: embeddings, key, value, "
    "context, attention_output, intermediate, output",
    "threshold_init": "the thresholds of a student trained for T start from: quantizer (the T-step quantizer's least-squares threshold) or quantile (threshold_quantile, as for T = infinity: fewer spikes)",
    "calibration_examples": "training examples the thresholds are calibrated on",
    "train_forward": "how training finds the rates: 'simulate' (the T-step spiking network, its rates with the implicit "
    "gradient there; default when trained for T) or 'solve' (the rate map's fixed point; faster; default "
    "for --train-for infinity)",
    "solver": "torchdeq solver for the fixed point with --feedback: anderson, broyden or fixed_point_iter",
    "spikelm_time_steps": "the SpikeLM baseline's T (it is trained by backprop through T steps)",
    "spikelm_reset": "the SpikeLM membrane: 'spikelm' (their multiplicative update) or 'soft' (reset by subtraction)",
    "spikelm_recipe": "the SpikeLM baseline's losses: 'distill' (eqspike's) or 'task' (its own: gold labels only)",
    "batch_size": "examples per optimiser step, over all processes",
    "micro_batches": "cut each process's share of a batch into this many parts, accumulating gradients (less memory)",
    "eval_batch_size": "examples per evaluation batch",
    "intermediate_epochs": "epochs of stage 1: hidden states and attention scores distilled layer by layer",
    "intermediate_lr": "learning rate of stage 1",
    "prediction_epochs": "epochs of stage 2: the teacher's predictions distilled",
    "prediction_lr": "learning rate of stage 2",
    "warmup_ratio": "linear warm-up over this fraction of a distillation stage's steps",
    "weight_decay": "AdamW weight decay (not on biases, LayerNorm weights or thresholds)",
    "max_grad_norm": "gradients clipped to this norm",
    "hidden_weight": "weight of the hidden-state loss in stage 1",
    "attention_weight": "weight of the attention-score loss in stage 1",
    "temperature": "temperature of the soft predictions in stage 2 (the loss is scaled by its square)",
    "gold_weight": "weight of the gold-label loss added in stage 2",
    "evals_per_epoch": "evaluations on the selection split (--selection) per epoch of stage 2 (the best student is kept)",
    "ema_decay": "stage 2 evaluates and keeps an exponential moving average of the weights, theta_avg <- d theta_avg "
    "+ (1 - d) theta after each step, with d this value (0: off; 0.9 averages about the last 10 steps); "
    "an energy budget then holds for the average, its energy taken as the same average of the steps'",
    "cache_teacher": "run the teacher once over the training set and read its outputs back from disk",
    "teacher_cache_dir": "where the teacher cache goes (default: TEACHER_STORE/cache)",
    "teacher_cache_dtype": "teacher cache values: float16, or float32 (exact, twice the disk)",
    "teacher_cache_max_gb": "a teacher cache whose layers' targets would take more than this many GB keeps the logits "
    "alone (the intermediate stage then runs the teacher live); larger even so: refused",
    "output_dir": "the run directory (default: runs/TASK-TEACHER-L<blocks>-T<steps>-<bits>)",
    "overwrite": "replace an existing run directory",
    "resume": "continue the run in --output-dir from its checkpoint, with its saved settings (max_steps included); "
    "a setting given that contradicts them is refused, except max_steps, device, micro_batches, "
    "eval_batch_size, logging_steps, save_steps and report_to; a run stopped before its first "
    "checkpoint starts again",
    "seed": "seed of the data order, initialisation and teacher fine-tuning (and of the data draws unless --data-seed): a run is repeatable",
    "data_seed": "seed of the data draws alone (the subsamples and the selection split; default: --seed): fix it to train and "
    "score every seed of --seeds on the same examples",
    "save_steps": "write a checkpoint every this many steps",
    "logging_steps": "a metrics.jsonl line (and a log line when stderr is not a terminal) every this many steps",
    "report_to": "none, or tensorboard: the logged scalars also as TensorBoard events in RUN/tensorboard "
    "(needs pip install tensorboard)",
    "max_steps": "stop after this many steps in all (continue later with --resume)",
    "device": "auto, cpu or cuda",
    "precision": "fp32, or bf16 autocast for the teacher and the rate map in training (GPUs)",
}
SECTIONS = {
    "teacher": "teacher and data",
    "teacher_store": "teacher fine-tuning (when the teacher has no head for the task)",
    "student_type": "student",
    "spikelm_time_steps": "the SpikeLM baseline (--student-type spikelm)",
    "batch_size": "distillation",
    "output_dir": "run",
}

FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
assert set(HELP) == set(FIELDS), sorted(set(FIELDS) ^ set(HELP))
_HINTS = typing.get_type_hints(RunConfig)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, lines: str) -> None:
        super().__init__(key)
        self.key, self.lines = key, lines


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(key, f"{seen[key] + 1} and {key_node.start_mark.line + 1}")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict of RunConfig fields (unknown keys refused by name)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    except _DuplicateKey as duplicate:
        raise ConfigError(
            f"config file {path}: key {duplicate.key!r} is given twice (lines {duplicate.lines}); keep one"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    for key in data:
        if key not in FIELDS:
            close = difflib.get_close_matches(str(key), FIELDS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"config file {path}: unknown key {key!r}{hint}")
    return {key: _number_from_text(key, value) for key, value in data.items()}


def _number_from_text(name: str, value: Any) -> Any:
    """YAML 1.1 reads 2e-4 (no dot) as a string: a numeric setting takes numeric text as its number."""
    base = _base_type(_HINTS[name])
    if not isinstance(value, str) or base not in (int, float) or name == "weight_bits":
        return value
    try:
        number = float(value)
    except ValueError:
        return value  # RunConfig names it as not valid
    if base is int and number.is_integer():
        return int(number)
    return number if base is float else value


def add_config_arguments(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """One flag per RunConfig field, grouped by section, each with its help and default; the parsed
    defaults are left unset so that only given flags override the YAML file."""
    parser.add_argument("--config", help="YAML file of settings, keys as the flags' names (flags given too override it)")
    group = parser
    for name, hint in _HINTS.items():
        if name in SECTIONS:
            group = parser.add_argument_group(SECTIONS[name])
        if name in exclude:
            continue
        flag = "--" + name.replace("_", "-")
        base = _base_type(hint)
        default = FIELDS[name].default
        text = f"{HELP[name]} (default: {'none' if default is None else default})"
        if base is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            optional = type(None) in typing.get_args(hint)
            if optional:
                text += "; 'none' unsets it"
            group.add_argument(
                flag, dest=name, type=_parser_for(base, name, optional), default=None, metavar=name.upper(), help=text
            )


def config_from_args(args: argparse.Namespace, **fixed: Any) -> RunConfig:
    """Defaults < YAML file (--config) < flags < ``fixed``."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(load_yaml(args.config))
    for name in FIELDS:
        given = getattr(args, name, None)
        if given is _UNSET:  # `--energy-budget none`: back to None, whatever the YAML file says
            values[name] = None
        elif given is not None:
            values[name] = given
    values.update(fixed)
    return RunConfig(**values)


def save_yaml(config: RunConfig, path: str | Path) -> None:
    write_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def _base_type(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


_UNSET = type("Unset", (), {"__repr__": lambda self: "none"})()  # what `--SETTING none` parses to for an optional setting


def _parser_for(base: Any, name: str, optional: bool = False):
    parse = str if name == "weight_bits" else base  # weight_bits: RunConfig validates it and names the valid choices
    if not optional:
        return parse

    def parse_optional(text: str) -> Any:
        return _UNSET if text.strip().lower() == "none" else parse(text)

    parse_optional.__name__ = parse.__name__  # argparse's message: "invalid float value: 'x'"
    return parse_optional
