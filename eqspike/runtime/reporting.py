"""Scalars of a run for an experiment tracker (``--report-to``): the records of metrics.jsonl, as
TensorBoard events. ``train/<stage>/<name>`` for the losses and learning rate of a logged step,
``dev/<metric>`` and ``dev/energy_ratio`` for an evaluation, all against the global step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eqspike.errors import EqspikeError

REPORT_TO = ("none", "tensorboard")


def check_report_to(report_to: str) -> None:
    """Refuse ``tensorboard`` before any work when the package is missing."""
    if report_to == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise EqspikeError(
                "--report-to tensorboard needs the tensorboard package: "
                "pip install 'eqspike[tensorboard]' (or pip install tensorboard)"
            ) from None


class TensorBoardReport:
    """Writes each numeric value of a metrics.jsonl record as a TensorBoard scalar."""

    def __init__(self, folder: str | Path) -> None:
        from torch.utils.tensorboard import SummaryWriter  # optional dependency, checked by check_report_to

        self.writer = SummaryWriter(log_dir=str(folder))

    def write(self, record: dict[str, Any]) -> None:
        step = record.get("step")
        if step is None:
            return
        # an evaluation: on the held-out selection split, or on the dev set (selection: dev)
        prefix = f"train/{record['stage']}" if "stage" in record else "selection" if record.get("split") == "split" else "dev"
        values = {**record.get("eval", {}), **{k: v for k, v in record.items() if k != "eval"}}
        for name, value in values.items():
            if name not in ("step", "stage", "mode", "split") and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{prefix}/{name}", value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_report(report_to: str, folder: str | Path) -> TensorBoardReport | None:
    """The tracker ``report_to`` names, writing into ``folder`` (None for 'none')."""
    check_report_to(report_to)
    return TensorBoardReport(folder) if report_to == "tensorboard" else None
