"""Scoring a student as it is deployed: the spiking network run for T steps on the dev set, its metric
and its energy per example relative to the teacher's, from the spikes it fires (docs/design.md §5, §7).
Under torchrun each rank runs every N-th batch and the sums are gathered.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from eqspike.data.evaluation import evaluate
from eqspike.distill.prepare import Prepared
from eqspike.runtime.distributed import Sharding
from eqspike.students.energy import StudentEnergy


@dataclass
class SpikingScore:
    metrics: dict[str, float]
    energy_ratio: float  # energy per example / the teacher's
    spike_factor: float | None = None  # the spikes' energy / the estimate from the rates trained on


def score_spiking(
    student,
    data: Prepared,
    time_steps: int,
    batch_size: int,
    device,
    sharding: Sharding = Sharding(),
    spike_factor: bool = False,
    desc: str = "spiking",
    splits=None,
) -> SpikingScore:
    """Metrics of ``student`` run as a spiking network for T steps on ``splits`` (default: every dev
    split), and its energy
    per example relative to the teacher's (``student.spiking_run``). ``spike_factor``: also the
    ratio of the spikes' energy to the estimate from the rates the student trains on, T |a| spikes a
    neuron (the simulation adds spikes that cancel); an energy budget uses it."""
    teacher = StudentEnergy.of(student.config)
    spent = {"spikes": 0.0, "dense": 0.0, "teacher": 0.0, "rates": 0.0}

    def logits(batch: dict[str, Tensor]) -> Tensor:
        out, spikes, dense, estimate = student.spiking_run(batch, time_steps, rate_estimate=spike_factor)
        spent["spikes"] += spikes
        spent["dense"] += dense
        spent["teacher"] += sum(map(teacher.teacher_pj, batch["attention_mask"].sum(1).tolist()))
        spent["rates"] += estimate or 0.0
        return out

    metrics = evaluate(
        logits, data.task, data.splits if splits is None else splits, batch_size, device, f"{desc} T={time_steps}", sharding
    )
    total = {key: sum(part[key] for part in sharding.gather(spent)) for key in spent}
    factor = total["spikes"] / total["rates"] if spike_factor and total["rates"] > 0 else None
    return SpikingScore(metrics, (total["spikes"] + total["dense"]) / total["teacher"], factor)
