"""eqspike against the surrogate-gradient SpikeLM baseline, trained in the same harness (DESIGN.md §6).

Both students start from the same teacher layers, see the same data in the same order (same seed)
and get the same epochs and losses (``spikelm_recipe="task"`` gives SpikeLM its own recipe). eqspike
is trained once: its training cost does not depend on T. SpikeLM is trained once per T, since its
amplitudes alpha_t exist per time step. Every run goes to its own folder under ``out_dir``, and a
finished run is reused rather than trained again.

Per method and T, the report gives the dev score, the time and peak memory of one training step,
the firing rate (spikes per neuron per step) and the energy per example (eqspike.energy).
A training step is forward + distillation loss + backward on the same first training batch, and
it is measured the same way for both (eqspike.benchmarking).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


from eqspike.benchmarking import describe_device, peak_memory_mb, seconds_per_call
from eqspike.config import RunConfig
from eqspike.data import batch_order
from eqspike.diagnostics import check_time_steps, diagnose
from eqspike.distillation import STUDENT, Distiller, StageForward, load_student, prepare_data
from eqspike.energy import ACCUMULATE_PJ, MAC_PJ, spikelm_macs
from eqspike.evaluation import evaluate
from eqspike.teacher import load_teacher

ROW_KEYS = ("method", "time_steps", "score", "train_step_s", "peak_train_mem_mb", "firing_rate", "energy_pj")


def _train_or_load(config: RunConfig, log) -> Path:
    out = Path(config.output_dir)
    if (out / "metrics.json").is_file() and (out / STUDENT / "config.json").is_file():
        log(f"compare: reusing the finished run {out}")
    else:
        Distiller(config.replace(overwrite=out.exists() and not (out / "checkpoint").exists(),
                                 resume=(out / "checkpoint" / "state.json").is_file()), log).run()
    return out


def _measure_training_step(config: RunConfig, run_dir: Path, teacher, data, indices: list[int], device,
                           repeats: int) -> tuple[float, float]:
    """(seconds, peak MiB) of one training step of the run's student on the batch ``indices``."""
    distiller = Distiller(config, log=lambda *_: None)
    student = load_student(run_dir / STUDENT).to(device).train()
    stage = "prediction" if config.student_type == "spikelm" and config.spikelm_recipe == "task" else "intermediate"
    layers = student.config.teacher_layers

    def step() -> None:
        distiller.step(StageForward(student, stage), teacher, data, indices, layers, stage)

    def clean() -> None:
        student.zero_grad(set_to_none=True)

    clean()
    memory = peak_memory_mb(step, device)
    clean()
    seconds = seconds_per_call(lambda: (clean(), step()), repeats=repeats, device=device)
    return seconds, memory


def compare(config: RunConfig, time_steps: list[int], out_dir: str | Path, log=print, repeats: int = 3) -> dict[str, Any]:
    """Train (or reuse) both students and write compare.json, compare.md and compare.png in ``out_dir``."""
    time_steps = check_time_steps(time_steps)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    eq_config = config.replace(student_type="eqspike", output_dir=str(out_dir / "eqspike"))
    eq_dir = _train_or_load(eq_config, log)
    spikelm = {}
    for T in time_steps:
        sl_config = config.replace(student_type="spikelm", spikelm_time_steps=T, output_dir=str(out_dir / f"spikelm-T{T}"))
        spikelm[T] = (sl_config, _train_or_load(sl_config, log))

    device = Distiller(config, log=lambda *_: None).device
    data = prepare_data(config, log=lambda *_: None)
    teacher = load_teacher(config, data.task, device, data.splits, data.train, log=lambda *_: None)
    indices = batch_order(len(data.train), config.batch_size, config.seed, 0)[0]
    split = data.splits[data.task.selection_split]
    metric = data.task.metric
    rows: list[dict[str, Any]] = []

    log("compare: measuring eqspike")
    eq_seconds, eq_memory = _measure_training_step(eq_config, eq_dir, teacher, data, indices, device, repeats)
    report = diagnose(load_student(eq_dir / STUDENT), data.task, split, time_steps, config.eval_batch_size, None, device)
    for k, T in enumerate(time_steps):
        rows.append({"method": "eqspike", "time_steps": T, "score": report.score_vs_T[k], "train_step_s": eq_seconds,
                     "peak_train_mem_mb": eq_memory, "firing_rate": report.firing_vs_T[k],
                     "energy_pj": report.energy_vs_T[k]["snn_pj"]})

    lengths = [len(ids) for ids in split.input_ids]
    for T, (sl_config, run_dir) in spikelm.items():
        log(f"compare: measuring spikelm T={T}")
        seconds, memory = _measure_training_step(sl_config, run_dir, teacher, data, indices, device, repeats)
        student = load_student(run_dir / STUDENT).to(device)
        student.count_spikes(True)
        score = evaluate(lambda b: student(**b).logits, data.task, {data.task.selection_split: split},
                         config.eval_batch_size, device, f"spikelm T={T}")[metric]
        firing, accumulates = student.spike_statistics()
        student.count_spikes(False)
        c = student.config
        macs = sum(spikelm_macs(c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_hidden_layers,
                                c.num_labels, n, T) for n in lengths)
        energy = (ACCUMULATE_PJ * accumulates + MAC_PJ * macs) / len(lengths)
        rows.append({"method": "spikelm", "time_steps": T, "score": score, "train_step_s": seconds,
                     "peak_train_mem_mb": memory, "firing_rate": firing, "energy_pj": energy})

    c = report.energy
    result = {
        "task": data.task.name, "metric": metric, "teacher": config.teacher,
        "teacher_score": json.loads((eq_dir / "metrics.json").read_text())["teacher_score"],
        "teacher_energy_pj": c["ann_pj"], "device": describe_device(device),
        "batch_size": config.batch_size, "spikelm_recipe": config.spikelm_recipe, "rows": rows,
    }
    (out_dir / "compare.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "compare.md").write_text(markdown_table(result) + "\n")
    _plot(result, out_dir / "compare.png")
    log(markdown_table(result))
    log(f"wrote {out_dir / 'compare.json'}, {out_dir / 'compare.md'}, {out_dir / 'compare.png'}")
    return result


def markdown_table(result: dict[str, Any]) -> str:
    lines = [f"| method | T | dev {result['metric']} | train step (s) | peak train memory (MiB) | firing rate | energy / example (uJ) | energy / teacher |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(result["rows"], key=lambda r: (r["time_steps"], r["method"])):
        lines.append(f"| {r['method']} | {r['time_steps']} | {r['score']:.4f} | {r['train_step_s']:.3f} | "
                     f"{r['peak_train_mem_mb']:.1f} | {r['firing_rate']:.3f} | {r['energy_pj'] / 1e6:.1f} | "
                     f"{r['energy_pj'] / result['teacher_energy_pj']:.3f} |")
    lines.append(f"| teacher ({result['teacher']}) | - | {result['teacher_score']:.4f} | | | | "
                 f"{result['teacher_energy_pj'] / 1e6:.1f} | 1 |")
    return "\n".join(lines)


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    steps = sorted({r["time_steps"] for r in result["rows"]})
    panels = [("score", f"dev {result['metric']}"), ("peak_train_mem_mb", "peak train memory (MiB)"),
              ("train_step_s", "train step (s)"), ("energy_pj", "energy / example (pJ)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6))
    x = np.arange(len(steps))
    for ax, (key, label) in zip(axes, panels):
        for offset, method, colour in ((-0.2, "eqspike", "tab:blue"), (0.2, "spikelm", "tab:orange")):
            values = {r["time_steps"]: r[key] for r in result["rows"] if r["method"] == method}
            ax.bar(x + offset, [values.get(t, np.nan) for t in steps], width=0.4, label=method, color=colour)
        if key == "score":
            ax.axhline(result["teacher_score"], color="tab:red", ls="--", lw=1, label="teacher")
        ax.set_xticks(x, [f"T={t}" for t in steps])
        ax.set_title(label, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
