"""Progress: bars on a terminal, log lines in a log file."""

from __future__ import annotations

import os
import sys
import time


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

    def __init__(
        self, desc: str, total: int, every: int, examples_per_step: int, log, first: int = 0, enabled: bool | None = None
    ) -> None:
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
