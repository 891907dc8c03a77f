"""Run configuration: one flat dataclass, read from YAML and overridden by command-line flags.

Every field is a YAML key and a flag (``student_layers`` <-> ``--student-layers``): the YAML files are
read and written by ``eqspike.distill.yaml_io`` (unknown keys refused by name, with the closest valid
key suggested), the flags built and parsed by ``eqspike.distill.flags``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

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


FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
HINTS = typing.get_type_hints(RunConfig)  # each field's annotation, resolved (``str | None``)


def base_type(hint: Any) -> Any:
    """The type a setting's values have: ``int`` for ``int | None``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint
