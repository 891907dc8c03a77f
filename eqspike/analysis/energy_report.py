"""`eqspike energy RUN`: a trained spiking student's energy per example under two conventions, against
honest baselines, from the spikes it fires on the dev set (docs/design.md §7).

For each T the student is simulated once (the pass of ``eqspike.analysis.sweep``) and its
inventory built per population and op kind (``eqspike.analysis.energy.spiking_inventory``). The
baselines are counted under the same op table and conventions:

    teacher_fp32, teacher_fp16, teacher_int8   the teacher (its depth and width)
    dense_student_fp32, dense_student_int8      the student's own shape without spikes (depth-matched)
    qnn                                         the student's shape with b-bit activations,
                                                b = ceil(log2(levels)), levels = 2T + 1 signed (T + 1
                                                unsigned): the network the student's T-step rate map
                                                is; each multiply done as b shift-adds

and, per baseline, the break-even firing rate: the average spikes per neuron and step at which the
student would cost what the baseline costs (``break_even_firing_rate``). Accuracy is not measured
here: the baselines' scores come from runs trained for them (``eqspike compare``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from eqspike.analysis.diagnostics import check_time_steps
from eqspike.analysis.energy import (
    ACCESS_MODELS,
    CONVENTIONS,
    Hardware,
    Op,
    break_even_firing_rate,
    dense_inventory,
    price,
    spikelm_inventory,
    spiking_inventory,
    state_format,
)
from eqspike.analysis.sweep import _subset_metrics, _sweep
from eqspike.data.batches import EncodedSplit
from eqspike.data.evaluation import evaluate
from eqspike.data.tasks import TaskData
from eqspike.students.energy import StudentEnergy

BASELINES = ("teacher_fp32", "teacher_fp16", "teacher_int8", "dense_student_fp32", "dense_student_int8", "qnn")


def spike_bits(levels: int, signed: bool) -> int:
    """Bits per neuron and step to move a spike of up to ``levels`` units, signed or not: ceil(log2(2L + 1))
    or ceil(log2(L + 1)) (1 for a plain spike, 2 for a ternary one)."""
    return math.ceil(math.log2((2 * levels if signed else levels) + 1))


def qnn_activation_bits(time_steps: int, signed: bool) -> int:
    """The activation width of the quantized network a T-step rate map is: ceil(log2(2T + 1)) signed."""
    return spike_bits(time_steps, signed)


def baseline_inventories(
    shape: StudentEnergy, lengths: Sequence[float], time_steps: int, weight_bits: float, signed: bool
) -> dict[str, list[Op]]:
    """The baselines of the module docstring, per example over ``lengths``."""
    bits = qnn_activation_bits(time_steps, signed)
    return {
        "teacher_fp32": dense_inventory(shape.teacher, shape.teacher_layers, lengths),
        "teacher_fp16": dense_inventory(shape.teacher, shape.teacher_layers, lengths, 16, 16, "fp16"),
        "teacher_int8": dense_inventory(shape.teacher, shape.teacher_layers, lengths, 8, 8, "int8"),
        "dense_student_fp32": dense_inventory(shape, shape.layers, lengths),
        "dense_student_int8": dense_inventory(shape, shape.layers, lengths, 8, 8, "int8"),
        "qnn": dense_inventory(shape, shape.layers, lengths, weight_bits, bits, state_format(weight_bits), matmul_adds=bits),
    }


def energy_report(
    student,
    task: TaskData,
    split: EncodedSplit,
    time_steps: Sequence[int] | None,
    batch_size: int,
    device: torch.device | str = "cpu",
    hardware: Hardware | None = None,
    access: str = "per_spike",
) -> dict[str, Any]:
    """The energy of ``student`` per example of ``split`` at each T: its inventory, its energy and each
    baseline's under both conventions (pJ), the ratios, and the break-even firing rates; also its score
    at each T (from the same simulation). An eqspike spiking student runs at every T of ``time_steps``
    (default: the T it was trained for); a SpikeLM student only at its own T."""
    if access not in ACCESS_MODELS:
        raise ValueError(f"access model {access!r} is not one of {ACCESS_MODELS}")
    hardware = hardware or Hardware()
    device = torch.device(device)
    student = student.to(device).eval()
    cfg = student.config
    shape = StudentEnergy.of(cfg)
    measured, signed, spikes_bits, membrane = _measure(student, task, split, time_steps, batch_size, device, shape, access)
    rows = []
    for t, score, firing, lengths, ops in measured:
        baselines = baseline_inventories(shape, lengths, t, cfg.weight_bits, signed)
        rows.append(
            {
                "time_steps": t,
                "score": score,
                "firing_rate": firing,
                "qnn_activation_bits": qnn_activation_bits(t, signed),
                "conventions": _conventions(ops, firing, baselines, hardware),
                "inventory": _inventory_rows(ops, hardware),
                "baseline_inventories": {name: _baseline_rows(b, hardware) for name, b in baselines.items()},
            }
        )
    lengths = measured[0][3]
    return {
        "metric": task.metric,
        "examples": len(lengths),
        "mean_length": sum(lengths) / max(len(lengths), 1),
        "student": _student_fields(cfg, shape, membrane, signed, spikes_bits),
        "hardware": _hardware_fields(hardware),
        "access": access,
        "conventions": {
            "compute": "arithmetic only: synaptic accumulates and the multiply-accumulates that remain "
            "(SpikingBERT's, SpikeLM's, Sorbet's convention)",
            "compute_memory": "also the membrane arithmetic and the memory traffic (weights, spikes or "
            "activations, membrane state), priced per bit",
        },
        "rows": rows,
    }


def _measure(student, task, split, time_steps, batch_size, device, shape, access) -> tuple[list[tuple], bool, Any, str]:
    """The student's measured inventories ((T, score, firing rate, lengths, inventory) per T), whether its
    spikes are signed, the bits of a spike (per population, or one number) and its membrane's format."""
    cfg = student.config
    if hasattr(student, "population_names"):
        measured = _eqspike_inventories(
            student, task, split, check_time_steps(time_steps or [cfg.time_steps]), batch_size, device, shape, access
        )
        signed, membrane = cfg.signed, state_format(cfg.weight_bits)
        spikes_bits = {n: spike_bits(cfg.levels(n), signed) for n in student.population_names(cfg.num_hidden_layers)}
    elif hasattr(student, "spiking_modules"):
        if time_steps and list(time_steps) != [cfg.time_steps]:
            raise ValueError(
                f"a SpikeLM student runs only at the T it was trained for ({cfg.time_steps}), not at {list(time_steps)}"
            )
        measured = [_spikelm_inventory(student, task, split, batch_size, device, shape, access)]
        signed, spikes_bits, membrane = True, 2, "fp32"  # ternary spikes, an FP32 membrane
    else:
        raise ValueError(
            f"a {cfg.model_type!r} student has no spikes to count; its energy is the dense_student rows "
            f"of a spiking student's report"
        )
    return measured, signed, spikes_bits, membrane


def _student_fields(cfg, shape: StudentEnergy, membrane: str, signed: bool, spikes_bits: Any) -> dict[str, Any]:
    """The student's shape against its teacher's, its weight and membrane formats, its spikes and the T
    it was trained for."""
    return {
        "model_type": cfg.model_type,
        "layers": shape.layers,
        "hidden": shape.hidden,
        "intermediate": shape.intermediate,
        "heads": shape.heads,
        "teacher_layers": shape.teacher_layers,
        "teacher_hidden": shape.teacher.hidden,
        "weight_bits": cfg.weight_bits,
        "membrane": membrane,
        "signed": signed,
        "spike_bits": spikes_bits,
        "trained_for": cfg.time_steps,
    }


def _hardware_fields(hardware: Hardware) -> dict[str, Any]:
    """The op table the energies are priced with: add and MAC energies per format, memory bank and pJ per bit."""
    return {
        "name": hardware.name,
        "add_pj": dict(hardware.add_pj),
        "mac_pj": dict(hardware.mac_pj),
        "memory_kb": hardware.memory_kb,
        "pj_per_bit": hardware.bit_pj,
        "source": hardware.source,
    }


def _conventions(ops: list[Op], firing: float, baselines: dict[str, list[Op]], hardware: Hardware) -> dict[str, Any]:
    """Per convention: the student's energy and each baseline's (uJ), the ratios student / baseline and
    the break-even firing rates."""
    conventions = {}
    for convention in CONVENTIONS:
        mine = price(ops, hardware, convention)
        theirs = {name: price(b, hardware, convention) for name, b in baselines.items()}
        conventions[convention] = {
            "student_uj": mine / 1e6,
            "baselines_uj": {name: pj / 1e6 for name, pj in theirs.items()},
            "ratio": {name: mine / pj for name, pj in theirs.items()},
            "break_even_firing_rate": {
                name: break_even_firing_rate(ops, firing, pj, hardware, convention) for name, pj in theirs.items()
            },
        }
    return conventions


def _inventory_rows(ops: list[Op], hardware: Hardware) -> list[dict[str, Any]]:
    """The student's inventory as JSON rows, each op's energy in uJ."""
    return [
        {
            "part": op.part,
            "kind": op.kind,
            "format": None if op.kind == "memory" else op.fmt,
            "count": op.count,
            "convention": op.convention,
            "per_spike": op.per_spike,
            "uj": op.pj(hardware) / 1e6,
        }
        for op in ops
    ]


def _baseline_rows(ops: list[Op], hardware: Hardware) -> list[dict[str, Any]]:
    """A baseline's inventory as JSON rows, each op's energy in uJ."""
    return [
        {
            "part": op.part,
            "kind": op.kind,
            "format": op.fmt,
            "count": op.count,
            "convention": op.convention,
            "uj": op.pj(hardware) / 1e6,
        }
        for op in ops
    ]


def _eqspike_inventories(student, task, split, time_steps, batch_size, device, shape, access) -> list[tuple]:
    """(T, score, firing rate, lengths, inventory) at each T, from one simulation to the largest."""
    cfg = student.config
    sweep = _sweep(student, split, time_steps, batch_size, device, None, detailed=False, desc="energy")
    lengths = [float(n) for n in sweep.lengths]
    names = list(sweep.spikes)
    neurons = dict(sweep.element_count)
    bits = {name: spike_bits(cfg.levels(name), cfg.signed) for name in names}
    out = []
    for k, t in enumerate(time_steps):
        spikes = {n: float(sweep.spikes[n][k]) for n in names}
        accumulates = {n: float(sweep.accumulates_by[n][k]) for n in names}
        ops = spiking_inventory(shape, lengths, t, spikes, accumulates, neurons, bits, cfg.weight_bits, access)
        score = _subset_metrics(task, split, sweep.logits[t])[task.metric]
        out.append((t, score, sum(spikes.values()) / (sum(neurons.values()) * t), lengths, ops))
    return out


def _spikelm_inventory(student, task, split, batch_size, device, shape, access) -> tuple:
    """(T, score, firing rate, lengths, inventory) of a SpikeLM student at its own T: its spiking modules
    count over the whole evaluation (``count_spikes``), as ``compare`` scores it."""
    student.count_spikes(True)
    score = evaluate(
        lambda b: student(**b).logits, task, {task.main_split: split}, batch_size, device, f"energy T={student.config.time_steps}"
    )[task.metric]
    stats = student.spike_statistics_by_module()
    student.count_spikes(False)
    get = lambda key: {n: s[key] for n, s in stats.items()}  # noqa: E731
    lengths = [float(len(ids)) for ids in split.input_ids]
    ops = spikelm_inventory(
        shape, lengths, student.config.time_steps, get("spikes"), get("accumulates"), get("neuron_steps"), access
    )
    firing = sum(get("spikes").values()) / max(sum(get("neuron_steps").values()), 1.0)
    return student.config.time_steps, score, firing, lengths, ops


def metrics_energy(report: dict[str, Any], time_steps: int) -> dict[str, Any]:
    """What metrics.json records beside ``student_energy_ratio`` (compute, against the FP32 teacher): the
    same ratio under compute_memory, and the ratios to the INT8 depth-matched dense student."""
    row = next(r for r in report["rows"] if r["time_steps"] == time_steps)
    c, m = row["conventions"]["compute"], row["conventions"]["compute_memory"]
    return {
        "student_energy_ratio_convention": "compute (arithmetic only), against the FP32 teacher",
        "student_energy_ratio_compute_memory": m["ratio"]["teacher_fp32"],
        "student_energy_ratio_dense_student_int8": {
            "compute": c["ratio"]["dense_student_int8"],
            "compute_memory": m["ratio"]["dense_student_int8"],
        },
        "student_energy_uj": {"compute": c["student_uj"], "compute_memory": m["student_uj"]},
    }
