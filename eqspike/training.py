"""Small pieces shared by the training loops: device, seeds, optimiser, schedule, atomic writes."""

from __future__ import annotations

import errno
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn

from eqspike.validation import EqspikeError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EqspikeError("device='cuda' was asked for but no CUDA device is available; use --device cpu")
    return torch.device(name)


PRECISIONS = ("fp32", "bf16")


def autocast(precision: str, device: torch.device):
    """The training-step context: bf16 autocast (CUDA, or CPU where supported) or nothing for fp32."""
    if precision == "fp32":
        return nullcontext()
    if precision != "bf16":
        raise EqspikeError(f"precision={precision!r} is not valid; choose one of: {', '.join(map(repr, PRECISIONS))}")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise EqspikeError(f"precision='bf16' needs a GPU with bfloat16 support; {torch.cuda.get_device_name(device)} "
                         f"has none: use --precision fp32")
    return torch.autocast(device.type, dtype=torch.bfloat16)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(named_parameters: Iterable[tuple[str, nn.Parameter]], lr: float, weight_decay: float,
                   threshold_lr: float | None = None) -> torch.optim.AdamW:
    """AdamW with no weight decay on biases and LayerNorm weights; thresholds (parameters named
    ``threshold*``, when trainable) in a group of their own with ``threshold_lr`` and no decay: a
    threshold is a step size of order 1, not a weight of order 0.05, so it needs a larger rate."""
    decay, no_decay, thresholds = [], [], []
    for name, parameter in named_parameters:
        if not parameter.requires_grad:
            continue
        if name.rsplit(".", 1)[-1].startswith("threshold"):
            thresholds.append(parameter)
        elif parameter.ndim < 2 or "norm" in name.lower():
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if thresholds:
        groups.append({"params": thresholds, "weight_decay": 0.0, "lr": threshold_lr or lr})
    return torch.optim.AdamW(groups, lr=lr)


SCHEDULES = ("linear", "constant")


def linear_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float,
                    kind: str = "linear") -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_ratio`` of the steps, then linear decay to 0 (``linear``) or the
    full rate to the end (``constant``)."""
    warmup = int(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@contextmanager
def atomic_directory(target: str | Path):
    """Yield a staging directory beside ``target`` (``.NAME.*``); on success it replaces
    ``target`` by two renames (``target`` -> ``.NAME.old``, staging -> ``target``), so a crash never
    leaves a half-written directory where a good one was. ``recover_directory`` repairs what a crash
    between the renames leaves. A full disk is reported as such, and the staging copy is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if _disk_full(error, target.parent):
            raise DiskFullError(f"no space left on the device holding {target.parent} while writing {target.name}; "
                                f"{'the previous ' + target.name + ' is intact' if target.exists() else 'nothing was replaced'}"
                                f" (free some space and continue with --resume)") from None
        raise


class DiskFullError(EqspikeError):
    """A write ran out of disk space (the message says what is intact)."""


def _disk_full(error: BaseException, folder: Path) -> bool:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    # torch.save reports a full disk from its zip writer ("unexpected pos"), not as ENOSPC
    return isinstance(error, RuntimeError) and shutil.disk_usage(folder).free < 64 * 2**20


def recover_directory(target: str | Path, complete_marker: str | None = None) -> list[str]:
    """Repair what a crash inside ``atomic_directory`` (or ``write_atomic``) can leave beside ``target``:
    when ``target`` is missing, a finished staging copy (it holds ``complete_marker``, written last)
    or else ``.NAME.old`` becomes ``target``; unfinished staging copies, temporary files and a leftover
    ``.NAME.old`` are removed. Returns what was done, for the log."""
    target = Path(target)
    done: list[str] = []
    if not target.parent.is_dir():
        return done
    old = target.with_name(f".{target.name}.old")
    staged = sorted((p for p in target.parent.glob(f".{target.name}.*") if p != old), key=lambda p: p.stat().st_mtime)
    if not target.exists() and complete_marker is not None:
        finished = [p for p in staged if (p / complete_marker).is_file()]
        if finished:
            os.replace(finished[-1], target)
            staged.remove(finished[-1])
            done.append(f"restored {target.name} from a finished copy a crash left behind")
        elif old.is_dir() and (old / complete_marker).is_file():
            os.replace(old, target)
            done.append(f"restored {target.name} from its previous version ({old.name})")
    for leftover in staged + ([old] if old.exists() else []):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        done.append(f"removed {leftover.name}, left by an interrupted write")
    return done


def write_atomic(path: str | Path, text: str) -> None:
    """Write a text file so that a crash leaves either the old file or the new one, never half of one."""
    path = Path(path)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def bars_on() -> bool:
    """Progress bars draw on a terminal (or with EQSPIKE_PROGRESS set); log files get log lines."""
    return sys.stderr.isatty() or bool(os.environ.get("EQSPIKE_PROGRESS"))


def progress(iterable=None, total: int | None = None, desc: str = "", disable: bool | None = None):
    """A tqdm bar (off when stderr is not a terminal and EQSPIKE_PROGRESS is not set)."""
    from tqdm.auto import tqdm

    if disable is None:
        disable = not bars_on()
    return tqdm(iterable, total=total, desc=desc, disable=disable, dynamic_ncols=True, leave=False)


class StepLog:
    """For log files (nohup, a batch scheduler): when progress bars are off, a line every ``every``
    steps and at the last one, with the step, the losses, the learning rate, examples per second and
    the time left: ``distill prediction: step 40/180 | loss 0.5123 | lr 8.9e-05 | 41.2 ex/s | ETA 2m03s``."""

    def __init__(self, desc: str, total: int, every: int, examples_per_step: int, log, first: int = 0,
                 enabled: bool | None = None) -> None:
        self.desc, self.total, self.every, self.examples_per_step, self.log = desc, total, every, examples_per_step, log
        self.enabled = not bars_on() if enabled is None else enabled
        self.first, self.started = first, time.time()

    def update(self, step: int, lr: float | None = None, **values: float) -> None:
        if not self.enabled or (step % self.every and step != self.total):
            return
        done = max(step - self.first, 1)
        per_step = (time.time() - self.started) / done
        parts = [f"{self.desc}: step {step}/{self.total}", *(f"{k} {v:.4f}" for k, v in values.items())]
        if lr is not None:
            parts.append(f"lr {lr:.2g}")
        parts += [f"{self.examples_per_step / per_step:.1f} ex/s", f"ETA {_duration(per_step * (self.total - step))}"]
        self.log(" | ".join(parts))


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"
