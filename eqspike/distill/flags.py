"""Command-line flags of the run settings: one per RunConfig field (``student_layers`` <-> ``--student-layers``),
grouped by section, each with its help and default; flags given override the YAML file (``config_from_args``)."""

from __future__ import annotations

import argparse
import typing
from typing import Any

from eqspike.distill.config import FIELDS, HINTS, RunConfig, base_type
from eqspike.distill.yaml_io import load_yaml

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

assert set(HELP) == set(FIELDS), sorted(set(FIELDS) ^ set(HELP))


def add_config_arguments(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """One flag per RunConfig field, grouped by section, each with its help and default; the parsed
    defaults are left unset so that only given flags override the YAML file."""
    parser.add_argument("--config", help="YAML file of settings, keys as the flags' names (flags given too override it)")
    group = parser
    for name, hint in HINTS.items():
        if name in SECTIONS:
            group = parser.add_argument_group(SECTIONS[name])
        if name in exclude:
            continue
        flag = "--" + name.replace("_", "-")
        base = base_type(hint)
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


_UNSET = type("Unset", (), {"__repr__": lambda self: "none"})()  # what `--SETTING none` parses to for an optional setting


def _parser_for(base: Any, name: str, optional: bool = False):
    """argparse's ``type`` for a setting: its base type (text for weight_bits), and for an optional
    setting 'none' read as unset (``_UNSET``)."""
    parse = str if name == "weight_bits" else base  # weight_bits: RunConfig validates it and names the valid choices
    if not optional:
        return parse

    def parse_optional(text: str) -> Any:
        return _UNSET if text.strip().lower() == "none" else parse(text)

    parse_optional.__name__ = parse.__name__  # argparse's message: "invalid float value: 'x'"
    return parse_optional
