"""The task's data prepared for a run: loaded and checked with the teacher before any work, subsampled
(seeded), tokenised with the teacher's tokenizer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from eqspike.data.batches import EncodedSplit
from eqspike.data.tasks import TaskData, load_task_data
from eqspike.distill.config import ConfigError, RunConfig
from eqspike.errors import EqspikeError
from eqspike.runtime import hub
from eqspike.runtime.files import check_output_dir
from eqspike.runtime.reporting import check_report_to
from eqspike.teacher.store import check_teacher_config, load_tokenizer, locate


# ----------------------------------------------------------------------------- the run
@dataclass
class Prepared:
    """The run's data. ``splits``: the dev splits, which score the final student (and teacher);
    ``selection``: the splits that choose the student kept and the teacher's best epoch, a seeded part
    carved from the training data (``selection: split``) or the dev splits themselves (``selection: dev``)."""

    task: TaskData
    tokenizer: Any
    train: EncodedSplit
    splits: dict[str, EncodedSplit]
    selection: dict[str, EncodedSplit]


def check_inputs(config: RunConfig) -> TaskData:
    """Load the task's data and check the teacher's config before any work, reporting every problem
    at once (a missing teacher and missing data in one message). Without the Hub, transformers and
    datasets use their caches only, so this takes seconds, not minutes of retries."""
    hub.use_local_caches_if_offline()
    problems, task = [], None
    try:
        task = load_task_data(config.task, config.data_dir, config.train_file, config.validation_file, config.label_type)
    except EqspikeError as error:
        problems.append(str(error))
    try:
        check_teacher_config(config.teacher_spec(), config.student_layers, config.student_widths)
    except EqspikeError as error:
        problems.append(str(error))
    try:
        check_report_to(config.report_to)
    except EqspikeError as error:
        problems.append(str(error))
    try:  # a fine-tuned teacher is stored there, after its fine-tuning
        check_output_dir(config.teacher_store, "--teacher-store")
    except EqspikeError as error:
        problems.append(str(error))
    if problems:
        raise ConfigError(
            problems[0] if len(problems) == 1 else " | ".join(f"({n}) {problem}" for n, problem in enumerate(problems, start=1))
        )
    return task


def subsample(examples: list, limit: int | None, seed: int) -> list:
    """At most ``limit`` examples, drawn at random (seeded) and kept in their order: the head of a
    file is often one class (a dev set ordered by label)."""
    if not limit or limit >= len(examples):
        return examples
    keep = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in keep]


def carve_selection(examples: list, fraction: float, seed: int) -> tuple[list, list]:
    """Split ``examples`` into (train, selection): a fraction of them, at least one, drawn at random
    (seeded, its own stream: not the subsample's) and kept in their order."""
    count = max(1, round(fraction * len(examples)))
    if count >= len(examples):
        raise ConfigError(
            f"selection_fraction={fraction} leaves no training examples out of {len(examples)}; lower it, or use --selection dev"
        )
    chosen = set(random.Random(f"selection-{seed}").sample(range(len(examples)), count))
    return ([e for i, e in enumerate(examples) if i not in chosen], [e for i, e in enumerate(examples) if i in chosen])


def warn_overlap(task: TaskData, log=print) -> None:
    """One line when dev examples also occur in the training data: their dev score is then optimistic."""
    seen = {(e.text_a, e.text_b) for e in task.train}
    for name, examples in task.validation.items():
        shared = sum((e.text_a, e.text_b) in seen for e in examples)
        if shared == len(examples):
            log(
                f"warning: all {shared} {name} examples also occur in the training data; the dev score measures "
                f"fitting, not generalisation (check --validation-file)"
            )
        elif shared:
            log(
                f"warning: {shared} of {len(examples)} {name} examples also occur in the training data; the dev "
                f"score is optimistic"
            )


def prepare_data(config: RunConfig, log=print, task: TaskData | None = None, tokenizer: Any = None) -> Prepared:
    """The run's splits: ``task`` (else loaded and checked, ``check_inputs``) subsampled and carved
    (seeded), tokenised with ``tokenizer`` (else the teacher's, loaded here)."""
    task = task or check_inputs(config)
    warn_overlap(task, log)
    data_seed = config.seed if config.data_seed is None else config.data_seed
    task.train = subsample(task.train, config.max_train_examples, data_seed)
    held_out = None
    if config.selection == "split":
        task.train, held_out = carve_selection(task.train, config.selection_fraction, data_seed)
    task.validation = {k: subsample(v, config.max_eval_examples, data_seed) for k, v in task.validation.items()}
    if task.label_names is not None and len({e.label for e in task.train}) < 2:
        raise ConfigError(
            f"the {len(task.train)} training examples of task {task.name!r} have a single label; "
            f"a classification task needs at least two (raise --max-train-examples)"
        )
    tokenizer = tokenizer or load_tokenizer(locate(config.teacher))
    pairs = any(e.text_b is not None for e in task.train)
    special = tokenizer.num_special_tokens_to_add(pair=pairs)
    if config.max_seq_length <= special + (1 if pairs else 0):
        raise ConfigError(
            f"max_seq_length={config.max_seq_length} leaves no room for text: the tokenizer adds {special} "
            f"special tokens to {'a pair of texts' if pairs else 'a text'}; give at least "
            f"{special + (2 if pairs else 1)}"
        )
    train = EncodedSplit(task.train, tokenizer, config.max_seq_length)
    splits = {name: EncodedSplit(examples, tokenizer, config.max_seq_length) for name, examples in task.validation.items()}
    selection = splits if held_out is None else {"selection": EncodedSplit(held_out, tokenizer, config.max_seq_length)}
    chosen_on = (
        f"the student kept and the teacher's epoch chosen on {len(held_out)} held-out training examples "
        f"(selection_fraction {config.selection_fraction:g}); the dev set scores the final ones"
        if held_out is not None
        else "selection on the dev set (--selection dev)"
    )
    log(
        f"data: {task.name}, {len(train)} train / "
        + ", ".join(f"{len(s)} {n}" for n, s in splits.items())
        + f", {task.num_labels} {'output' if task.is_regression else 'labels'}, metric {task.metric}; {chosen_on}"
        + (f"; {task.label_note}" if task.label_note else "")
    )
    return Prepared(task, tokenizer, train, splits, selection)
