"""The task's data prepared for a run: loaded and checked with the teacher before any work, subsampled
(seeded), tokenised with the teacher's tokenizer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from eqspike.config import ConfigError, RunConfig
from eqspike.data.batches import EncodedSplit
from eqspike.data.tasks import TaskData, load_task_data
from eqspike.errors import EqspikeError
from eqspike.runtime import hub
from eqspike.runtime.reporting import check_report_to
from eqspike.teacher.store import check_teacher_config, load_tokenizer, locate


# ----------------------------------------------------------------------------- the run
@dataclass
class Prepared:
    task: TaskData
    tokenizer: Any
    train: EncodedSplit
    splits: dict[str, EncodedSplit]


def check_inputs(config: RunConfig) -> TaskData:
    """Load the task's data and check the teacher's config before any work, reporting every problem
    at once (a missing teacher and missing data in one message). Without the Hub, transformers and
    datasets use their caches only, so this takes seconds, not minutes of retries."""
    hub.use_local_caches_if_offline()
    problems, task = [], None
    try:
        task = load_task_data(config.task, config.data_dir, config.train_file, config.validation_file)
    except EqspikeError as error:
        problems.append(str(error))
    try:
        check_teacher_config(config)
    except EqspikeError as error:
        problems.append(str(error))
    try:
        check_report_to(config.report_to)
    except EqspikeError as error:
        problems.append(str(error))
    if problems:
        raise ConfigError(problems[0] if len(problems) == 1 else
                          " | ".join(f"({n}) {problem}" for n, problem in enumerate(problems, start=1)))
    return task


def subsample(examples: list, limit: int | None, seed: int) -> list:
    """At most ``limit`` examples, drawn at random (seeded) and kept in their order: the head of a
    file is often one class (a dev set ordered by label)."""
    if not limit or limit >= len(examples):
        return examples
    keep = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in keep]


def prepare_data(config: RunConfig, log=print) -> Prepared:
    task = check_inputs(config)
    task.train = subsample(task.train, config.max_train_examples, config.seed)
    task.validation = {k: subsample(v, config.max_eval_examples, config.seed) for k, v in task.validation.items()}
    if task.label_names is not None and len({e.label for e in task.train}) < 2:
        raise ConfigError(f"the {len(task.train)} training examples of task {task.name!r} have a single label; "
                          f"a classification task needs at least two (raise --max-train-examples)")
    tokenizer = load_tokenizer(locate(config.teacher))
    train = EncodedSplit(task.train, tokenizer, config.max_seq_length)
    splits = {name: EncodedSplit(examples, tokenizer, config.max_seq_length) for name, examples in task.validation.items()}
    log(f"data: {task.name}, {len(train)} train / " + ", ".join(f"{len(s)} {n}" for n, s in splits.items())
        + f", {task.num_labels} {'output' if task.is_regression else 'labels'}, metric {task.metric}")
    return Prepared(task, tokenizer, train, splits)
