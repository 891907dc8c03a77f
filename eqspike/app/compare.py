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
from eqspike.app.compare_methods import (
    DEFAULT_BASELINES,
    METHOD_OF,
    check_comparison,
    plan_runs,
    row,
    spikelm_at,
    teacher_int8_rows,
)
from eqspike.app.compare_report import seeds_table, summarize_seeds, write_compare
from eqspike.data.batches import batch_order
from eqspike.data.evaluation import evaluate
from eqspike.distill.config import RunConfig
from eqspike.distill.inputs import RunInputs
from eqspike.distill.run_directory import RunDirectory, RunDirectoryError
from eqspike.distill.stages import StageForward
from eqspike.distill.trainer import Distiller, TrainingDiverged
from eqspike.runtime.devices import resolve_device
from eqspike.runtime.environment import environment_record
from eqspike.students.energy import StudentEnergy


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


class _Measured:
    """The comparison's inputs (opened once, for every run), its dev split and the teacher's energy per example."""

    def __init__(self, inputs: RunInputs, device) -> None:
        self.inputs, self.data, self.teacher, self.device = inputs, inputs.data, inputs.teacher, device
        self.split = self.data.splits[self.data.task.main_split]
        t = self.teacher.model.config
        dense = StudentEnergy.of_teacher(t)
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
        if match_energy and METHOD_OF[method].at_spikelm_energy:
            spikelm_dir = next(c.output_dir for name, t, c in runs if name == "spikelm" and t == T)
            if spikelm_dir in diverged:
                log(f"compare: SpikeLM T={T} diverged; eqspike T={T} is trained without an energy budget")
            else:
                m = measured
                student = RunDirectory(spikelm_dir).load_student(m.device)
                _, _, energy_pj = spikelm_at(student, m.data, m.split, T, run_config.eval_batch_size, m.device)
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
    and energy under both conventions (the dense networks, the dense student as W8A8 and the QNN, priced
    by the energy report's inventories; the spiking students simulated by ``energy_report``)."""
    spec = METHOD_OF[method]
    run_dir = RunDirectory(run_config.output_dir)
    seconds, memory = _measure_training_step(run_config, run_dir, m.teacher, m.data, indices, m.device, repeats)
    student = run_dir.load_student(m.device)
    batch_size = run_config.eval_batch_size
    rows: list[dict[str, Any]] = []
    if spec.dense_rows:
        lengths = [float(len(ids)) for ids in m.split.input_ids]
        inventories = baseline_inventories(
            StudentEnergy.of(student.config), lengths, T or time_steps[0], student.config.weight_bits, True
        )
        for dense in spec.dense_rows:
            score = dense.score(student, m.data, m.split, batch_size, m.device, dense.name)
            energy = [price(inventories[dense.inventory], Hardware(), convention) for convention in CONVENTIONS]
            # a dense network is one network whatever T: a row per T, to read beside the spiking ones
            rows += [row(dense.name, t, score, seconds, memory, 0.0, *energy) for t in (time_steps if dense.every_t else [T])]
        return rows
    report = energy_report(student, m.data.task, m.split, spec.scored_at(T, time_steps), batch_size, m.device)
    for simulated in report["rows"]:
        spent = {name: convention["student_uj"] * 1e6 for name, convention in simulated["conventions"].items()}
        rows.append(
            row(
                method,
                simulated["time_steps"],
                simulated["score"],
                seconds,
                memory,
                simulated["firing_rate"],
                spent["compute"],
                spent["compute_memory"],
            )
        )
    return rows


def _measure_runs(
    runs: list[tuple[str, int | None, RunConfig]],
    diverged: dict[str, str],
    m: _Measured,
    time_steps: list[int],
    indices: list[int],
    repeats: int,
    log,
) -> list[dict[str, Any]]:
    """Every run's rows (``_rows_of``); a run whose training diverged gives rows that say so, without scores."""
    rows: list[dict[str, Any]] = []
    for method, T, run_config in runs:
        if run_config.output_dir in diverged:
            for name in METHOD_OF[method].row_names:
                rows += [
                    {**row(name, t, None, None, None, None, None, None), "diverged": diverged[run_config.output_dir]}
                    for t in ([T] if T else time_steps)
                ]
            continue
        log(f"compare: measuring {method}" + (f" T={T}" if T else " at every T"))
        rows += _rows_of(method, T, run_config, m, time_steps, indices, repeats)
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
    baselines = check_comparison(baselines, match_energy, baselines_only)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = plan_runs(config, time_steps, out_dir, baselines, match_energy, baselines_only)
    device = resolve_device(config.device)
    m = _Measured(RunInputs.open(config, device, log), device)
    diverged, budgets = _train_runs(runs, m, match_energy, log)

    indices = batch_order(len(m.data.train), config.batch_size, config.seed, 0)[0]
    rows = _measure_runs(runs, diverged, m, time_steps, indices, repeats, log)
    if "ann" in baselines:  # the teacher run as a W8A8 network (post-training), beside the INT8 dense student
        rows += teacher_int8_rows(m.teacher, m.data, m.split, time_steps, config.eval_batch_size, device)
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


def _evaluate_teacher(teacher, data, config: RunConfig, device) -> float:
    return evaluate(lambda b: teacher.model(**b).logits, data.task, data.splits, config.eval_batch_size, device)[data.task.metric]
