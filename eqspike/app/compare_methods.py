"""The methods of ``eqspike compare``: what each trains (its student kind and settings, one run per T or
one network for every T), which ``--baselines`` name adds it, and how its rows are scored. ``compare``
reads this table and has no branch per method.

    eqspike       trained for T (the T-step rate map; implicit gradients), simulated at T
    eqspike-inf   trained once for T = infinity (the exact equilibrium), simulated at every T
    dense         the same architecture without spikes and the same recipe; also run as W8A8 (dense-int8)
    spikelm       SpikeLM trained at T by backprop through time (its own neuron), run at T
    qnn           trained on its T-step quantized map and run as that map (ceil(log2(2T+1))-bit activations)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eqspike.analysis.energy import CONVENTIONS, Hardware, dense_inventory, price
from eqspike.core.quantization import simulate_int8
from eqspike.data.evaluation import evaluate
from eqspike.distill.config import RunConfig
from eqspike.students.energy import StudentEnergy, spikelm_energy_pj

# What `--baselines` may train beside eqspike at each T: ann (the dense student, also scored at INT8, and
# the teacher scored at INT8), qnn, spikelm, infinity (eqspike trained once for T = infinity, run at every T).
BASELINES = ("ann", "qnn", "spikelm", "infinity")
DEFAULT_BASELINES = ("ann", "spikelm", "infinity")


def _logits(student, data, split, batch_size: int, device, name: str, **mode: Any) -> float:
    splits = {data.task.main_split: split}
    return evaluate(lambda b: student(**b, **mode).logits, data.task, splits, batch_size, device, name)[data.task.metric]


def score_network(student, data, split, batch_size: int, device, name: str) -> float:
    """The dev score of a network run as it is (a dense student)."""
    return _logits(student, data, split, batch_size, device, name)


def score_int8(student, data, split, batch_size: int, device, name: str) -> float:
    """The dev score of a network run as W8A8 (``simulate_int8``)."""
    with simulate_int8(student):
        return _logits(student, data, split, batch_size, device, name)


def score_quantized_map(student, data, split, batch_size: int, device, name: str) -> float:
    """The dev score of a student run as its T-step quantized map (the fixed point of that map)."""
    return _logits(student, data, split, batch_size, device, name, mode="solve")


Scorer = Callable[..., float]


@dataclass(frozen=True)
class DenseRow:
    """A row of a method counted as a dense network of the energy report: its name, the report's
    inventory that prices it, how it is scored, and whether it is reported beside every T (one
    network whatever T) or only at the run's T."""

    name: str
    inventory: str
    score: Scorer
    every_t: bool


@dataclass(frozen=True)
class Method:
    """One method of a comparison.

    ``baseline``: the ``--baselines`` name that adds it (None: eqspike at T, trained unless
    ``--baselines-only``). ``per_t``: one run per T (else one network for every T). ``changes``: its
    settings over the comparison's, given T. ``dense_rows``: scored as dense networks of the energy
    report (else simulated by ``energy_report`` at its T, or at every T). ``at_spikelm_energy``: with
    ``--match-energy``, trained under the energy SpikeLM reached at the same T."""

    name: str
    baseline: str | None
    per_t: bool
    changes: Callable[[int | None], dict[str, Any]]
    dense_rows: tuple[DenseRow, ...] = ()
    at_spikelm_energy: bool = False

    def folder(self, T: int | None, match_energy: bool) -> str:
        if T is None:
            return self.name
        suffix = "-at-spikelm-energy" if match_energy and self.at_spikelm_energy else ""
        return f"{self.name}-T{T}{suffix}"

    @property
    def row_names(self) -> tuple[str, ...]:
        return tuple(row.name for row in self.dense_rows) or (self.name,)

    def scored_at(self, T: int | None, time_steps: list[int]) -> list[int]:
        return [T] if T is not None else time_steps


# In training order within a comparison: the networks for every T first, then per T in this order (SpikeLM
# before the eqspike student that ``--match-energy`` trains at its energy).
METHOD_SPECS = (
    Method(
        "eqspike-inf",
        "infinity",
        per_t=False,
        changes=lambda T: {"student_type": "eqspike", "train_for": "infinity", "energy_budget": None},
    ),
    Method(
        "dense",
        "ann",
        per_t=False,
        changes=lambda T: {"student_type": "dense", "energy_budget": None},
        dense_rows=(
            DenseRow("dense", "dense_student_fp32", score_network, every_t=True),
            DenseRow("dense-int8", "dense_student_int8", score_int8, every_t=True),
        ),
    ),
    Method(
        "spikelm",
        "spikelm",
        per_t=True,
        changes=lambda T: {"student_type": "spikelm", "spikelm_time_steps": T, "energy_budget": None},
    ),
    Method(
        "eqspike",
        None,
        per_t=True,
        changes=lambda T: {"student_type": "eqspike", "train_for": "time_steps", "time_steps": T},
        at_spikelm_energy=True,
    ),
    Method(
        "qnn",
        "qnn",
        per_t=True,
        changes=lambda T: {
            "student_type": "eqspike",
            "train_for": "time_steps",
            "train_forward": "solve",
            "time_steps": T,
            "energy_budget": None,
        },
        dense_rows=(DenseRow("qnn", "qnn", score_quantized_map, every_t=False),),
    ),
)
METHOD_OF = {method.name: method for method in METHOD_SPECS}


def check_baselines(baselines) -> tuple[str, ...]:
    """``--baselines``: a comma-separated list or a sequence of ann, qnn, spikelm, infinity."""
    names = tuple(b.strip() for b in (baselines.split(",") if isinstance(baselines, str) else baselines) if b.strip())
    unknown = [b for b in names if b not in BASELINES]
    if unknown:
        raise ValueError(
            f"--baselines {','.join(names)}: {', '.join(map(repr, unknown))} is not a baseline; "
            f"choose from {', '.join(BASELINES)}"
        )
    return names


def check_comparison(baselines, match_energy: bool, baselines_only: bool) -> tuple[str, ...]:
    """The baselines named (``check_baselines``), refused with ``--match-energy`` unless SpikeLM is
    trained beside eqspike (its energy is the budget)."""
    names = check_baselines(baselines)
    if match_energy and ("spikelm" not in names or baselines_only):
        raise ValueError(
            "--match-energy trains eqspike at SpikeLM's energy: keep spikelm in --baselines, without --baselines-only"
        )
    return names


def plan_runs(
    config: RunConfig,
    time_steps: list[int],
    out_dir: Path,
    baselines: tuple[str, ...],
    match_energy: bool = False,
    baselines_only: bool = False,
) -> list[tuple[str, int | None, RunConfig]]:
    """The runs of a comparison, in training order: (method, T or None for one network at every T, settings)."""
    chosen = [m for m in METHOD_SPECS if (m.baseline in baselines if m.baseline else not baselines_only)]
    slots = [(m, None) for m in chosen if not m.per_t] + [(m, T) for T in time_steps for m in chosen if m.per_t]
    return [(m.name, T, config.replace(**m.changes(T), output_dir=str(out_dir / m.folder(T, match_energy)))) for m, T in slots]


def row(
    method: str,
    T: int,
    score: float | None,
    seconds: float | None,
    memory: float | None,
    firing: float | None,
    energy_pj: float | None,
    energy_pj_compute_memory: float | None,
) -> dict[str, Any]:
    return {
        "method": method,
        "time_steps": T,
        "score": score,
        "train_step_s": seconds,
        "peak_train_mem_mb": memory,
        "firing_rate": firing,
        "energy_pj": energy_pj,
        "energy_pj_compute_memory": energy_pj_compute_memory,
    }


def spikelm_at(student, data, split, T: int, batch_size: int, device) -> tuple[float, float, float]:
    """(dev score, firing rate, energy per example in pJ) of a SpikeLM student."""
    lengths = [len(ids) for ids in split.input_ids]
    student.count_spikes(True)
    score = evaluate(
        lambda b: student(**b).logits, data.task, {data.task.main_split: split}, batch_size, device, f"spikelm T={T}"
    )[data.task.metric]
    firing, accumulates = student.spike_statistics()
    student.count_spikes(False)
    return score, firing, spikelm_energy_pj(student.config, accumulates, lengths, T) / len(lengths)


def teacher_int8_rows(teacher, data, split, time_steps: list[int], batch_size: int, device) -> list[dict[str, Any]]:
    """The teacher as a W8A8 network (``simulate_int8``): its dev score and its energy under both
    conventions (the energy report's ``teacher_int8``), one row per T like the dense student's."""
    with simulate_int8(teacher.model):
        score = evaluate(
            lambda b: teacher.model(**b).logits, data.task, {data.task.main_split: split}, batch_size, device, "teacher-int8"
        )[data.task.metric]
    t = teacher.model.config
    ops = dense_inventory(
        StudentEnergy.of_teacher(t), t.num_hidden_layers, [float(len(ids)) for ids in split.input_ids], 8, 8, "int8"
    )
    energy = [price(ops, Hardware(), convention) for convention in CONVENTIONS]
    return [row("teacher-int8", T, score, None, None, 0.0, *energy) for T in time_steps]
