"""The teacher's targets a run distils: its outputs for the student's layers, run live or read back
from the teacher cache (``eqspike.teacher.cache``), or none when the task loss alone trains the student."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from eqspike.distill.config import RunConfig
from eqspike.distill.prepare import Prepared
from eqspike.students.initialization import uniform_layer_map
from eqspike.teacher.base import Teacher
from eqspike.teacher.targets import TargetsFn, cached_targets, live_targets


def run_targets(
    c: RunConfig,
    teacher: Teacher,
    data: Prepared,
    student,
    *,
    device: torch.device,
    log,
    on_main_first,
    with_layers: bool,
    stage_index: Callable[[], int],
) -> TargetsFn | None:
    """The targets of a batch for the student's teacher layers (every k-th, or spread evenly for a random
    student); from the cache with ``cache_teacher`` (the layers' targets too when ``with_layers``); None
    for the task loss alone."""
    layers = (
        student.config.teacher_layers
        if c.student_init != "random"
        else uniform_layer_map(teacher.model.config.num_hidden_layers, student.config.num_hidden_layers)
    )
    if c.task_loss_only:
        return None
    if c.cache_teacher:
        return _cached(c, teacher, data, layers, device, log, on_main_first, with_layers, stage_index)
    return live_targets(teacher.model, layers)


def _cached(
    c: RunConfig, teacher: Teacher, data: Prepared, layers: list[int], device, log, on_main_first, with_layers: bool, stage_index
) -> TargetsFn:
    """The targets read back from the teacher cache, built by rank 0 first (``on_main_first``); a cache
    too large with the layers keeps the logits alone, and the intermediate stage (``stage_index()`` 0)
    then runs the teacher live."""
    from eqspike.teacher.cache import build_or_open

    root = Path(c.teacher_cache_dir) if c.teacher_cache_dir else Path(c.teacher_store) / "cache"
    cache = on_main_first(
        lambda: build_or_open(
            teacher.model,
            data.train,
            layers,
            root,
            with_layers=with_layers,
            dtype=c.teacher_cache_dtype,
            batch_size=c.eval_batch_size,
            device=device,
            max_gb=c.teacher_cache_max_gb,
            log=log,
            logits_if_too_large=True,
        )
    )
    cached = cached_targets(cache, device)
    if with_layers and not cache.with_layers:  # too large with the layers: they come from the live teacher
        live = live_targets(teacher.model, layers)
        return lambda batch: live(batch) if stage_index() == 0 else cached(batch)
    return cached
