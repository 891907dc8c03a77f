"""eqspike against the surrogate-gradient SpikeLM baseline, trained in the same harness (docs/design.md §9).

Both students start from the same teacher layers, see the same data in the same order (same seed)
and get the same epochs and losses (``spikelm_recipe="task"`` gives SpikeLM its own recipe). At each
T, eqspike is trained for that T (its rate map quantized as T steps quantize it; implicit gradients,
so its training cost does not depend on T) and SpikeLM is trained at that T by backprop through time
(its amplitudes alpha_t exist per time step). One more eqspike student is trained for T = infinity
(the exact equilibrium) and run at every T, and one dense student (the same architecture without
spikes, the same recipe): the reference for what the spikes themselves cost. Every run goes to its
own folder under ``out_dir``, and a finished run is reused rather than trained again.

Per method and T, the report gives the dev score, the time and peak memory of one training step,
the firing rate (spikes per neuron per step) and the energy per example (eqspike.students.energy).
A training step is forward + distillation loss + backward on the same first training batch, and
it is measured the same way for both (eqspike.analysis.benchmarking).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eqspike.analysis.benchmarking import (
    describe_device,
    peak_memory_mb,
    seconds_per_call,
)
from eqspike.analysis.diagnostics import check_time_steps
from eqspike.analysis.energy import CONVENTIONS, Hardware, dense_inventory, price
from eqspike.analysis.energy_report import baseline_inventories, energy_report
from eqspike.analysis.seeds import paired_differences, spread
from eqspike.app.compare_report import METHODS, seeds_table, write_compare
from eqspike.core.quantization import simulate_int8
from eqspike.data.batches import batch_order
from eqspike.data.evaluation import evaluate
from eqspike.distill.config import RunConfig
from eqspike.distill.inputs import RunInputs
from eqspike.distill.run_directory import RunDirectory, RunDirectoryError
from eqspike.distill.trainer import Distiller, StageForward, TrainingDiverged
from eqspike.runtime.devices import resolve_device
from eqspike.runtime.environment import environment_record
from eqspike.students.energy import StudentEnergy, spikelm_energy_pj
from eqspike.students.families import family_of

# What `--baselines` may train beside eqspike at each T: ann (the dense student, also scored at INT8, and
# the teacher scored at INT8), qnn,
# spikelm, infinity (eqspike trained once for T = infinity, run at every T).
BASELINES = ("ann", "qnn", "spikelm", "infinity")
DEFAULT_BASELINES = ("ann", "spikelm", "infinity")


def _train_or_load(config: RunConfig, log, inputs: RunInputs | None = None) -> RunDirectory:
    run = RunDirectory(config.output_dir)
    if run.finished:
        differ = run.settings_differ(config)
        if differ:
            raise RunDirectoryError(
                f"compare: {run.root} finished with other settings ({', '.join(differ)}); remove it or choose another --out"
            )
        log(f"compare: reusing the finished run {run.root}")
    else:
        Distiller(
            config.replace(overwrite=run.root.exists() and not run.has_checkpoint, resume=run.has_checkpoint), log, inputs=inputs
        ).run()
    return run


def _measure_training_step(
    config: RunConfig, run_dir: RunDirectory, teacher, data, indices: list[int], device, repeats: int
) -> tuple[float, float]:
    """(seconds, peak MiB) of one training step of the run's student on the batch ``indices``: the
    trainer's own ``step`` (forward, losses, backward) in the stage that trains the most."""
    distiller = Distiller(config, log=lambda *_: None)
    student = run_dir.load_student(device).train()
    distiller.attach(device, teacher, student.config.teacher_layers)
    stage = distiller.stages(data)[1 if config.task_loss_only else 0]

    def step() -> None:
        distiller.step(StageForward(student, stage.name), stage, data, indices)

    def clean() -> None:
        student.zero_grad(set_to_none=True)

    memory = peak_memory_mb(step, device, reset=clean)
    clean()
    seconds = seconds_per_call(lambda: (clean(), step()), repeats=repeats, device=device)
    return seconds, memory


def plan_runs(
    config: RunConfig,
    time_steps: list[int],
    out_dir: Path,
    baselines: tuple[str, ...],
    match_energy: bool = False,
    baselines_only: bool = False,
) -> list[tuple[str, int | None, RunConfig]]:
    """The runs of a comparison, in training order: (method, T or None for one network at every T, settings)."""
    eq = config.replace(student_type="eqspike")
    runs: list[tuple[str, int | None, RunConfig]] = []
    if "infinity" in baselines:
        runs.append(
            ("eqspike-inf", None, eq.replace(train_for="infinity", energy_budget=None, output_dir=str(out_dir / "eqspike-inf")))
        )
    if "ann" in baselines:
        runs.append(("dense", None, config.replace(student_type="dense", energy_budget=None, output_dir=str(out_dir / "dense"))))
    for T in time_steps:
        if "spikelm" in baselines:
            runs.append(
                (
                    "spikelm",
                    T,
                    config.replace(
                        student_type="spikelm",
                        spikelm_time_steps=T,
                        energy_budget=None,
                        output_dir=str(out_dir / f"spikelm-T{T}"),
                    ),
                )
            )
        folder = f"eqspike-T{T}-at-spikelm-energy" if match_energy else f"eqspike-T{T}"
        if not baselines_only:
            runs.append(("eqspike", T, eq.replace(train_for="time_steps", time_steps=T, output_dir=str(out_dir / folder))))
        if "qnn" in baselines:
            runs.append(
                (
                    "qnn",
                    T,
                    eq.replace(
                        train_for="time_steps",
                        train_forward="solve",
                        time_steps=T,
                        energy_budget=None,
                        output_dir=str(out_dir / f"qnn-T{T}"),
                    ),
                )
            )
    return runs


class _Measured:
    """The comparison's inputs (opened once, for every run), its dev split and the teacher's energy per example."""

    def __init__(self, inputs: RunInputs, device) -> None:
        self.inputs, self.data, self.teacher, self.device = inputs, inputs.data, inputs.teacher, device
        self.split = self.data.splits[self.data.task.main_split]
        t = self.teacher.model.config
        width = family_of(t.model_type).shape(t)
        dense = StudentEnergy(
            t.hidden_size,
            width["intermediate_size"],
            t.num_attention_heads,
            t.num_hidden_layers,
            t.num_labels,
            t.num_hidden_layers,
        )
        lengths = [float(len(ids)) for ids in self.split.input_ids]
        self.teacher_pj = sum(dense.teacher_pj(len(ids)) for ids in self.split.input_ids) / len(self.split)
        self.teacher_pj_compute_memory = price(dense_inventory(dense, t.num_hidden_layers, lengths), Hardware(), "compute_memory")


def _train_runs(
    runs: list[tuple[str, int | None, RunConfig]], measured: _Measured, match_energy: bool, log
) -> tuple[dict[str, str], dict[int, float]]:
    """Train (or reuse) every run; with ``match_energy``, eqspike at T under SpikeLM's energy at T (the
    run before it). Returns the runs that diverged (folder -> error) and the budgets set."""
    diverged: dict[str, str] = {}  # a run whose training diverged is reported as such, not dropped
    budgets: dict[int, float] = {}
    for index, (method, T, run_config) in enumerate(runs):
        if method == "eqspike" and match_energy:
            spikelm_dir = runs[index - 1][2].output_dir
            if spikelm_dir in diverged:
                log(f"compare: SpikeLM T={T} diverged; eqspike T={T} is trained without an energy budget")
            else:
                m = measured
                _, _, energy_pj = _spikelm_at(
                    RunDirectory(spikelm_dir).load_student(measured.device),
                    m.data,
                    m.split,
                    T,
                    run_config.eval_batch_size,
                    measured.device,
                )
                budgets[T] = energy_pj / m.teacher_pj
                log(
                    f"compare: SpikeLM at T={T} spends {budgets[T]:.3f} of the teacher's energy: eqspike T={T} is "
                    f"trained under that budget"
                )
                run_config = run_config.replace(energy_budget=budgets[T])
                runs[index] = (method, T, run_config)
        try:
            _train_or_load(run_config, log, measured.inputs)
        except TrainingDiverged as error:
            log(f"compare: {method}" + (f" T={T}" if T else "") + f" diverged: {error}")
            diverged[run_config.output_dir] = str(error)
    return diverged, budgets


def _rows_of(
    method: str, T: int | None, run_config: RunConfig, m: _Measured, time_steps: list[int], indices: list[int], repeats: int
) -> list[dict[str, Any]]:
    """A trained run's rows: its training step's time and memory, and per T its dev score, firing rate
    and energy under both conventions (the dense student also as W8A8; the QNN at its T-step map)."""
    run_dir = RunDirectory(run_config.output_dir)
    seconds, memory = _measure_training_step(run_config, run_dir, m.teacher, m.data, indices, m.device, repeats)
    student = run_dir.load_student(m.device)
    batch_size = run_config.eval_batch_size
    rows: list[dict[str, Any]] = []
    if method in ("dense", "qnn"):  # counted as the dense networks of the energy report
        lengths = [float(len(ids)) for ids in m.split.input_ids]
        inventories = baseline_inventories(
            StudentEnergy.of(student.config), lengths, T or time_steps[0], student.config.weight_bits, True
        )
        for name, inventory, t_values in (
            [("dense", "dense_student_fp32", time_steps), ("dense-int8", "dense_student_int8", time_steps)]
            if method == "dense"
            else [("qnn", "qnn", [T])]
        ):
            ops = inventories[inventory]
            score = _dense_score(student, m.data, m.split, batch_size, m.device, name)
            energy = [price(ops, Hardware(), convention) for convention in CONVENTIONS]
            # the dense networks are one network whatever T: a row per T, to read beside the spiking ones
            rows += [_row(name, t, score, seconds, memory, 0.0, *energy) for t in t_values]
        return rows
    report = energy_report(
        student, m.data.task, m.split, [T] if method == "spikelm" else (time_steps if T is None else [T]), batch_size, m.device
    )
    for row in report["rows"]:
        spent = {name: convention["student_uj"] * 1e6 for name, convention in row["conventions"].items()}
        rows.append(
            _row(
                method,
                row["time_steps"],
                row["score"],
                seconds,
                memory,
                row["firing_rate"],
                spent["compute"],
                spent["compute_memory"],
            )
        )
    return rows


def compare(
    config: RunConfig,
    time_steps: list[int],
    out_dir: str | Path,
    log=print,
    repeats: int = 3,
    match_energy: bool = False,
    baselines: tuple[str, ...] = DEFAULT_BASELINES,
    baselines_only: bool = False,
) -> dict[str, Any]:
    """Train (or reuse) the students and write compare.json, compare.md, compare.png and pareto.png in
    ``out_dir``: per T, SpikeLM trained at T and eqspike trained for T; eqspike trained once for
    T = infinity, run at every T; and the dense student (the same architecture without spikes, the
    same recipe: what the spikes themselves cost), one network reported beside every T.
    ``match_energy``: eqspike at T is trained under an energy budget equal to the energy ratio SpikeLM
    reached at T (measured on the dev set first), so that the two are compared at equal or lower energy
    for eqspike. ``baselines``: ``ann`` (the dense student, also run as a W8A8 network: ``dense-int8``;
    and the teacher as W8A8: ``teacher-int8``), ``qnn`` (per T, the student trained on its T-step
    quantized map and run as that quantized network: ceil(log2(2T+1))-bit activations), ``spikelm``,
    ``infinity`` (eqspike trained for T = infinity, run at every T). ``baselines_only``: train and report
    the baselines alone, not eqspike at T (baselines added to a comparison whose eqspike runs were
    reported before). Every row gives its energy under both conventions (``energy_pj``: compute,
    ``energy_pj_compute_memory``; ``eqspike.analysis.energy_report``)."""
    time_steps = check_time_steps(time_steps)
    baselines = check_baselines(baselines)
    if match_energy and ("spikelm" not in baselines or baselines_only):
        raise ValueError(
            "--match-energy trains eqspike at SpikeLM's energy: keep spikelm in --baselines, without --baselines-only"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = plan_runs(config, time_steps, out_dir, baselines, match_energy, baselines_only)
    device = resolve_device(config.device)
    m = _Measured(RunInputs.open(config, device, log), device)
    diverged, budgets = _train_runs(runs, m, match_energy, log)

    indices = batch_order(len(m.data.train), config.batch_size, config.seed, 0)[0]
    rows: list[dict[str, Any]] = []
    for method, T, run_config in runs:
        if run_config.output_dir in diverged:
            for name in [method, "dense-int8"] if method == "dense" else [method]:
                rows += [
                    {**_row(name, t, None, None, None, None, None, None), "diverged": diverged[run_config.output_dir]}
                    for t in ([T] if T else time_steps)
                ]
            continue
        log(f"compare: measuring {method}" + (f" T={T}" if T else " at every T"))
        rows += _rows_of(method, T, run_config, m, time_steps, indices, repeats)
    if "ann" in baselines:  # the teacher run as a W8A8 network (post-training), beside the INT8 dense student
        rows += _teacher_int8_rows(m.teacher, m.data, m.split, time_steps, config.eval_batch_size, device)
    result = {
        "task": m.data.task.name,
        "metric": m.data.task.metric,
        "teacher": config.teacher,
        "teacher_score": m.teacher.score if m.teacher.score is not None else _evaluate_teacher(m.teacher, m.data, config, device),
        "teacher_energy_pj": m.teacher_pj,
        "teacher_energy_pj_compute_memory": m.teacher_pj_compute_memory,
        "energy_conventions": "energy_pj: compute (arithmetic only); energy_pj_compute_memory: with memory traffic "
        "(eqspike energy; 45 nm, 32 KB SRAM, weights read per spike)",
        "baselines": list(baselines),
        "device": describe_device(device),
        "batch_size": config.batch_size,
        "spikelm_recipe": config.spikelm_recipe,
        "energy_budget": config.energy_budget,
        "eqspike_budgets_at_spikelm_energy": {str(T): b for T, b in budgets.items()} if match_energy else None,
        "rows": rows,
        "environment": environment_record(device, config.precision),
    }
    write_compare(result, out_dir, log)
    return result


def compare_seeds(
    config: RunConfig, time_steps: list[int], out_dir: str | Path, seeds: list[int], log=print, **options: Any
) -> dict[str, Any]:
    """``compare`` once per seed (``out_dir/seed-S``), then per T and per eqspike student the paired
    differences over seeds: its dev score and its energy ratio minus SpikeLM's on the same seed (the
    same data order, selection split and teacher), with their 95% intervals. Writes compare_seeds.json
    and compare_seeds.md in ``out_dir``."""
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {' '.join(map(str, seeds))} names a seed twice")
    out_dir = Path(out_dir)
    results = {}
    for seed in seeds:
        log(f"compare: seed {seed}")
        results[seed] = compare(config.replace(seed=seed), time_steps, out_dir / f"seed-{seed}", log, **options)

    summary = {**summarize_seeds(results, time_steps), "runs": {str(s): str(out_dir / f"seed-{s}") for s in seeds}}
    (out_dir / "compare_seeds.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = seeds_table(summary)
    (out_dir / "compare_seeds.md").write_text(table + "\n")
    log(table)
    log(f"wrote {out_dir / 'compare_seeds.json'}, {out_dir / 'compare_seeds.md'}")
    return summary


REFERENCES = ("eqspike", "spikelm", "dense", "qnn")  # over seeds, each method's paired differences to these


def summarize_seeds(results: dict[int, dict[str, Any]], time_steps: list[int]) -> dict[str, Any]:
    """Per T and method, over the seeds of ``results`` (seed -> a ``compare`` result): the dev score and
    the energy ratio (mean, std, 95% interval), and their paired differences to each of ``REFERENCES``
    on the same seed (the same data order, selection split and teacher)."""
    seeds = list(results)

    def value(result: dict[str, Any], method: str, T: int, key: str) -> float | None:
        row = next((r for r in result["rows"] if r["method"] == method and r["time_steps"] == T), None)
        if row is None or row["score"] is None:
            return None
        return row["score"] if key == "score" else row["energy_pj"] / result["teacher_energy_pj"]

    rows = []
    trained = {r["method"] for result in results.values() for r in result["rows"]}
    for T in check_time_steps(time_steps):
        for method in (m for m in METHODS if m in trained):
            entry: dict[str, Any] = {"method": method, "time_steps": T}
            for key in ("score", "energy_ratio"):
                per_seed = {s: v for s in seeds if (v := value(results[s], method, T, key)) is not None}
                entry[key] = spread(list(per_seed.values())) if per_seed else None
                for reference in REFERENCES:
                    if method == reference:
                        continue
                    theirs = {s: v for s in seeds if (v := value(results[s], reference, T, key)) is not None}
                    entry[f"{key}_minus_{reference}"] = (
                        paired_differences(per_seed, theirs) if set(per_seed) & set(theirs) else None
                    )
            rows.append(entry)
    return {
        "task": results[seeds[0]]["task"],
        "metric": results[seeds[0]]["metric"],
        "seeds": seeds,
        "teacher_score": spread([results[s]["teacher_score"] for s in seeds]),
        "rows": rows,
        "environment": {str(s): results[s].get("environment") for s in seeds},
    }


def _evaluate_teacher(teacher, data, config: RunConfig, device) -> float:
    return evaluate(lambda b: teacher.model(**b).logits, data.task, data.splits, config.eval_batch_size, device)[data.task.metric]


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


def _row(
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


def _spikelm_at(student, data, split, T: int, batch_size: int, device) -> tuple[float, float, float]:
    """(dev score, firing rate, energy per example in pJ) of a SpikeLM student."""
    lengths = [len(ids) for ids in split.input_ids]
    student.count_spikes(True)
    score = evaluate(
        lambda b: student(**b).logits, data.task, {data.task.main_split: split}, batch_size, device, f"spikelm T={T}"
    )[data.task.metric]
    firing, accumulates = student.spike_statistics()
    student.count_spikes(False)
    return score, firing, spikelm_energy_pj(student.config, accumulates, lengths, T) / len(lengths)


def _teacher_int8_rows(teacher, data, split, time_steps: list[int], batch_size: int, device) -> list[dict[str, Any]]:
    """The teacher as a W8A8 network (``simulate_int8``): its dev score and its energy under both
    conventions (the energy report's ``teacher_int8``), one row per T like the dense student's."""
    with simulate_int8(teacher.model):
        score = evaluate(
            lambda b: teacher.model(**b).logits, data.task, {data.task.main_split: split}, batch_size, device, "teacher-int8"
        )[data.task.metric]
    t = teacher.model.config
    width = family_of(t.model_type).shape(t)
    shape = StudentEnergy(
        t.hidden_size, width["intermediate_size"], t.num_attention_heads, t.num_hidden_layers, t.num_labels, t.num_hidden_layers
    )
    ops = dense_inventory(shape, t.num_hidden_layers, [float(len(ids)) for ids in split.input_ids], 8, 8, "int8")
    energy = [price(ops, Hardware(), convention) for convention in CONVENTIONS]
    return [_row("teacher-int8", T, score, None, None, 0.0, *energy) for T in time_steps]


def _dense_score(student, data, split, batch_size: int, device, name: str) -> float:
    """The dev score of a dense student (``dense``; ``dense-int8``: run as W8A8) or of a student run as its
    T-step quantized map (``qnn``: the fixed point of that map)."""
    splits = {data.task.main_split: split}
    if name == "qnn":
        return evaluate(lambda b: student(**b, mode="solve").logits, data.task, splits, batch_size, device, name)[
            data.task.metric
        ]
    if name == "dense-int8":
        with simulate_int8(student):
            return evaluate(lambda b: student(**b).logits, data.task, splits, batch_size, device, name)[data.task.metric]
    return evaluate(lambda b: student(**b).logits, data.task, splits, batch_size, device, name)[data.task.metric]
