"""A run's inputs, opened once: the task's data and the teacher's config checked (``check_inputs``),
the teacher's tokenizer loaded, the data subsampled and tokenised (``prepare_data``), and the teacher
found, or fine-tuned and stored (``load_teacher``), with that same tokenizer.

``eqspike compare`` opens them once and hands them to each of its runs; a run opened alone opens its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from eqspike.distill.config import RunConfig
from eqspike.distill.prepare import Prepared, check_inputs, prepare_data
from eqspike.teacher.base import Teacher
from eqspike.teacher.store import load_teacher, load_tokenizer, locate


@dataclass
class RunInputs:
    data: Prepared
    teacher: Teacher

    @classmethod
    def open(
        cls,
        config: RunConfig,
        device: torch.device,
        log=print,
        teacher_first: Callable[[Callable[[], Any]], Any] = lambda load: load(),
    ) -> RunInputs:
        """The data of ``config``'s task and its teacher, on ``device``. ``teacher_first`` runs the
        teacher's loading (under torchrun: on rank 0 first, which may fine-tune and store it)."""
        task = check_inputs(config)
        data = prepare_data(config, log, task, load_tokenizer(locate(config.teacher)))
        teacher = teacher_first(
            lambda: load_teacher(
                config.teacher_spec(), data.task, device, data.splits, data.train, log, data.selection, data.tokenizer
            )
        )
        return cls(data, teacher)
