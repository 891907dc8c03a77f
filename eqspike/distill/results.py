"""What a distillation run reports: the best student scored as it is deployed and ``metrics.json``
written (``finish``), or, when training diverges, what happened and what is kept (``divergence_message``)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from eqspike.distill.config import RunConfig
from eqspike.distill.prepare import Prepared
from eqspike.distill.run_directory import RunDirectory
from eqspike.distill.selection import Evaluator
from eqspike.students import STUDENTS, load_student
from eqspike.version import __version__


def finish(
    evaluator: Evaluator, data: Prepared, teacher_metrics: dict[str, float], command: str | None, environment: dict[str, Any]
) -> dict[str, Any]:
    """The best student reloaded, simulated at its T and solved on the dev splits; metrics.json (with
    the energy report's numbers where the kind reports energy) written, and the scores logged."""
    c, run_dir, log = evaluator.config, evaluator.run_dir, evaluator.log
    evaluator.sharding.barrier()  # rank 0 has written the best student
    student = load_student(run_dir.student).to(evaluator.device)
    kind = STUDENTS[c.student_type]
    T = student.config.time_steps
    log(
        f"evaluating the best student as a spiking network (simulate, T={T})"
        if kind.spiking
        else "evaluating the best student (dense)"
    )
    scored = evaluator.score_spiking(student, data, T)
    solved = evaluator.evaluate(lambda b: student(**b, mode="solve").logits, data, "student solve")
    result = result_record(c, data, student, scored, solved, teacher_metrics, command, environment)
    if kind.reports_energy and evaluator.sharding.is_main:  # both conventions (eqspike energy RUN: the report)
        from eqspike.analysis.energy_report import energy_report, metrics_energy

        main_split = data.splits[data.task.main_split]
        result.update(metrics_energy(energy_report(student, data.task, main_split, [T], c.eval_batch_size, evaluator.device), T))
    run_dir.write_result(result)
    metric = data.task.metric
    name = f"spiking {kind.kind} student (T={T}, {student.config.weight_bits}-bit weights)" if kind.spiking else "dense student"
    log(
        f"teacher {metric} {result['teacher_score']:.4f} | {name} {metric} {result['student_score']:.4f}, energy "
        f"{scored.energy_ratio:.3f} x the teacher's"
        + (f" | rate map (solve) {result['student_solve_score']:.4f}" if kind.spiking else "")
    )
    log(f"run directory: {run_dir.root}")
    return result


def result_record(
    c: RunConfig,
    data: Prepared,
    student,
    scored,
    solved: dict[str, float],
    teacher_metrics: dict[str, float],
    command: str | None,
    environment: dict[str, Any],
) -> dict[str, Any]:
    """metrics.json: the teacher's and the student's scores (``scored``: simulated; ``solved``: at the
    rate map's fixed point), score_ratio = student / teacher, the energy ratio, and how the run was made."""
    kind = STUDENTS[c.student_type]
    metric = data.task.metric
    T = student.config.time_steps
    return {
        "task": data.task.name,
        "metric": metric,
        "teacher": c.teacher,
        "teacher_score": teacher_metrics[metric],
        "teacher_metrics": teacher_metrics,
        "student_score": scored.metrics[metric],
        "student_metrics": scored.metrics,
        "student_solve_score": solved[metric],
        "student_solve_metrics": solved,
        "score_ratio": scored.metrics[metric] / teacher_metrics[metric] if teacher_metrics[metric] else None,
        "student_energy_ratio": scored.energy_ratio,
        "time_steps": T if kind.spiking else None,
        "train_for": kind.train_for(c),
        "energy_budget": c.energy_budget,
        "weight_bits": student.config.weight_bits,
        "student_type": c.student_type,
        "student_layers": student.config.num_hidden_layers,
        "teacher_layers": student.config.teacher_layers,
        "num_parameters": sum(p.numel() for p in student.parameters()),
        "eqspike_version": __version__,
        "command": command,
        "selection": c.selection,
        "environment": environment,
    }


def divergence_message(run_dir: RunDirectory, state: dict[str, Any], stage: str, losses: dict[str, Tensor]) -> str:
    """What to say when a step's gradient is not finite (nothing of that step is applied)."""
    values = ", ".join(f"{k} {v.item():.4g}" for k, v in losses.items())
    step = run_dir.checkpoint_step()
    kept = (
        f"the last good checkpoint, {run_dir.checkpoint} (step {step}), is kept: lower --{stage}-lr or "
        f"--max-grad-norm and continue with --resume"
        if step is not None
        else "no checkpoint had been written yet: lower the learning rate and start again"
    )
    return (
        f"training diverged at step {state['global_step'] + 1} ({stage} stage): the gradient is not finite "
        f"({values}); nothing of that step was applied; {kept}"
    )
