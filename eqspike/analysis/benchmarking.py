"""Measuring a training step: peak memory and wall time, the same way for every method compared.

Peak memory is the largest amount of tensor memory allocated *during* the call, above what was
allocated before it (model weights and inputs are not counted). On CUDA it comes from the caching
allocator's statistics; on the CPU from the allocation events that ``torch.profiler`` records.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager

import torch


@contextmanager
def _native_stderr_silenced():
    """The profiler's native code logs a line to stderr when it starts and stops; hide those."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _cpu_peak_bytes(fn: Callable[[], object]) -> int:
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _native_stderr_silenced():
        prof.__enter__()
    try:
        fn()
    finally:
        with _native_stderr_silenced():
            prof.__exit__(None, None, None)
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def peak_memory_mb(
    fn: Callable[[], object], device: torch.device | str = "cpu", warmup: int = 1, reset: Callable[[], object] | None = None
) -> float:
    """Peak tensor memory (MiB) allocated while ``fn()`` runs, above the level before the call.

    ``warmup`` calls come first, so that what a first call allocates for good (CUDA's cuBLAS workspace,
    32 MiB on an H200: measured once as the whole step of a tiny network) is not charged to ``fn``;
    ``reset()`` (e.g. zeroing gradients) runs before every call, warm-up and measured."""
    device = torch.device(device)
    for _ in range(warmup):
        if reset is not None:
            reset()
        fn()
    if reset is not None:
        reset()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    return _cpu_peak_bytes(fn) / 2**20


def seconds_per_call(fn: Callable[[], object], repeats: int = 3, warmup: int = 1, device: torch.device | str = "cpu") -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    device = torch.device(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_seconds(
    fn: Callable[[], object], baseline: Callable[[], object], repeats: int = 3, device: torch.device | str = "cpu"
) -> tuple[float, float, float]:
    """Times ``fn`` and ``baseline`` alternately (after one warm-up call each), so that both see the
    same machine load; returns their median times and the median of the per-pair ratios fn/baseline."""
    pairs = [
        (
            seconds_per_call(fn, 1, warmup=1 if i == 0 else 0, device=device),
            seconds_per_call(baseline, 1, warmup=1 if i == 0 else 0, device=device),
        )
        for i in range(repeats)
    ]
    return (
        statistics.median(a for a, _ in pairs),
        statistics.median(b for _, b in pairs),
        statistics.median(a / b for a, b in pairs),
    )


def describe_device(device: torch.device | str = "cpu") -> str:
    """A one-line description of where a benchmark ran."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA), torch {torch.__version__}"
    import platform

    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}"
