"""The model card of a saved student: ``README.md`` in its folder, in the Hugging Face Hub's format
(YAML metadata, then Markdown). It says what the student is (teacher, task, T, neuron, weight bits),
what it scores (as a spiking network at each measured T, at equilibrium, against its teacher), what
it costs (energy per example relative to the teacher), how to use it, and the command that made it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from eqspike.runtime.files import write_atomic
from eqspike.students import student_class

CARD_NAME = "README.md"
GLUE_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")


def _score(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def _evaluated_on(row: Mapping[str, Any]) -> str:
    """What an ``eqspike evaluate`` row measured beyond its T: a neuron override, a subsample of the dev set."""
    parts = [f"{name} {value}" for name, value in (row.get("neuron") or {}).items()]
    if row.get("examples") is not None and row.get("examples") != row.get("dev_examples"):
        parts.append(f"{row['examples']} of {row['dev_examples']} dev examples")
    return "".join(f", {part}" for part in parts)


def model_card(
    config: Any,
    result: Mapping[str, Any] | None = None,
    evaluations: Sequence[Mapping[str, Any]] = (),
    command: str | None = None,
    best: Mapping[str, Any] | None = None,
) -> str:
    """The card of a student with ``config``. ``result``: the run's metrics.json (final scores);
    ``evaluations``: rows ``{"time_steps", "score"}`` of ``eqspike evaluate``; ``best``: the dev
    evaluation that selected the student while the run is still going (before ``result``)."""
    result = dict(result or {})
    student = student_class(config.model_type)
    kind, dense = student.description, not student.spiking
    task, metric = result.get("task"), result.get("metric", "score")
    teacher = config.teacher or result.get("teacher")
    T = config.time_steps
    metadata = _metadata(config, result, dense, task, teacher, metric, T)

    lines = ["---", yaml.safe_dump(metadata, sort_keys=False).strip(), "---", ""]
    lines += _description(config, kind, dense, task, teacher, T)
    lines += _neurons(config, T)
    lines += _scores(config, result, evaluations, best, dense, task, metric, T)
    lines += _selection(result)
    if result.get("environment"):
        lines += ["## Environment", "", environment_line(result["environment"]), ""]
    if not result:
        lines += ["The run that makes this student has not finished: the final scores are added when it does.", ""]

    lines += _use(config, dense, T)
    if command or result:
        lines += ["## How it was made", "", "```bash", command or "eqspike distill --config config.yaml", "```", ""]
    return "\n".join(lines)


def _description(config: Any, kind: str, dense: bool, task: str | None, teacher: str | None, T: int) -> list[str]:
    """The card's title and what the student is: its kind, shape, teacher (and the layers distilled), T
    and weight bits."""
    bits = {32: "full precision", 1.58: "1.58-bit (ternary)", 1: "1-bit (binary)"}.get(
        config.weight_bits, f"{config.weight_bits}-bit"
    )
    return [
        f"# {config.model_type}: {task or 'a task'} from {teacher or 'a BERT teacher'}",
        "",
        f"{kind} with {config.num_hidden_layers} blocks (hidden size {config.hidden_size}, "
        f"{config.num_attention_heads} heads, FFN {config.intermediate_size}"
        + (
            f"; the teacher's hidden size {config.teacher_hidden_size}, distilled through learned projections"
            if getattr(config, "narrower", False)
            else ""
        )
        + "), distilled "
        f"from {teacher or 'its teacher'}"
        + (
            f" (layers {', '.join(map(str, config.teacher_layers))} of {config.teacher_num_hidden_layers})"
            if config.teacher_layers
            else ""
        )
        + (", as a dense network (no spikes, no time steps)" if dense else f", and made to run for **T = {T} time steps**")
        + f". Weights: {bits}.",
        "",
    ]


def _neurons(config: Any, T: int) -> list[str]:
    """The spiking student's neurons (rounding, hysteresis) and what it was trained for (T or infinity);
    nothing for a student without them."""
    if not hasattr(config, "rounding"):
        return []
    simulated = getattr(config, "equilibrium", None) is not None and config.equilibrium.forward == "simulate"
    trained = (
        ("for T = %d (" % T + ("the rates of its T-step spiking network" if simulated else "T-step quantized rates") + ")")
        if getattr(config, "quantize_rates", False)
        else "at the exact equilibrium (T = infinity)"
    )
    return [
        f"Neurons: signed integrate-and-fire, `{config.rounding}` rounding, hysteresis "
        f"{config.hysteresis}; trained {trained} by implicit differentiation through the equilibrium.",
        "",
    ]


def _selection(result: Mapping[str, Any]) -> list[str]:
    """What the student kept was selected on (a held-out split, or the dev set), when the run says."""
    if not result.get("selection"):
        return []
    return [
        "The student kept is the best of its evaluations on "
        + (
            "a held-out part of the training data (a seeded selection split): the dev set scored only this final student."
            if result["selection"] == "split"
            else "the dev set itself (`--selection dev`): its dev score above is the best of several, so it is optimistic."
        ),
        "",
    ]


def _metadata(
    config: Any, result: Mapping[str, Any], dense: bool, task: str | None, teacher: str | None, metric: str, T: int
) -> dict[str, Any]:
    """The card's YAML header: library, tags, base model, data set and the dev score (model-index)."""
    metadata: dict[str, Any] = {
        "library_name": "eqspike",
        "pipeline_tag": "text-classification",
        "tags": ([] if dense else ["spiking-neural-network", "snn"])
        + ["bert", "knowledge-distillation", "eqspike", config.model_type],
    }
    if teacher and not Path(str(teacher)).exists():
        metadata["base_model"] = teacher
    if task in GLUE_TASKS:
        metadata["datasets"] = ["nyu-mll/glue"]
    if result.get("student_score") is not None:
        metadata["model-index"] = [
            {
                "name": f"{config.model_type}-{task}",
                "results": [
                    {
                        "task": {"type": "text-classification"},
                        "dataset": {
                            "name": str(task),
                            "type": "nyu-mll/glue" if task in GLUE_TASKS else str(task),
                            "split": "validation",
                        },
                        "metrics": [
                            {
                                "type": metric,
                                "value": round(float(result["student_score"]), 4),
                                "name": f"dev {metric}" + ("" if dense else f", spiking at T={T}"),
                            }
                        ],
                    }
                ],
            }
        ]
    return metadata


def _scores(
    config: Any,
    result: Mapping[str, Any],
    evaluations: Sequence[Mapping[str, Any]],
    best: Mapping[str, Any] | None,
    dense: bool,
    task: str | None,
    metric: str,
    T: int,
) -> list[str]:
    """The scores section: the teacher's, the student's (spiking at T and at its fixed point), those of
    `eqspike evaluate`, and the energy per example under both conventions."""
    lines: list[str] = []
    rows = _score_rows(config, result, evaluations, best, dense, T)
    if rows:
        lines += [
            f"## Scores (dev set of {task})",
            "",
            f"| network | {metric} | energy per example / teacher |",
            "|---|---:|---:|",
        ]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in rows] + [""]
        lines += [
            "Energy counts every spike as one accumulate (0.9 pJ) at each of its targets and what stays dense "
            "as multiply-accumulates (4.6 pJ), against the teacher's dense forward under the same costs "
            "(arithmetic only, the papers' convention).",
            "",
        ]
        lines += _memory_energy(result)
    return lines


def _score_rows(
    config: Any,
    result: Mapping[str, Any],
    evaluations: Sequence[Mapping[str, Any]],
    best: Mapping[str, Any] | None,
    dense: bool,
    T: int,
) -> list[tuple[str, str, str]]:
    """The score table's rows (network, score, energy per example / teacher): the teacher, the student
    spiking at T and at its fixed point (or the dev score that selected it), and each `eqspike evaluate` row."""
    rows = []
    if result:
        rows.append(("teacher (dense BERT)", _score(result.get("teacher_score")), "1"))
        energy = result.get("student_energy_ratio")
        rows.append(
            (
                "this student (dense)" if dense else f"this student, spiking, T = {result.get('time_steps', T)}",
                _score(result.get("student_score")),
                f"{energy:.3f}" if isinstance(energy, (int, float)) else "-",
            )
        )
        if result.get("student_solve_score") is not None and not dense:
            label = (
                "this student, at the fixed point of its T-step quantized rate map"
                if getattr(config, "quantize_rates", False)
                else "this student, at the equilibrium it was trained for"
            )
            rows.append((label, _score(result["student_solve_score"]), "-"))
    elif best:
        rows.append((f"this student, dev score that selected it (step {best.get('step', '?')})", _score(best.get("score")), "-"))
    for row in evaluations:
        rows.append(
            (
                f"this student, spiking, T = {row['time_steps']} (`eqspike evaluate`{_evaluated_on(row)})",
                _score(row.get("score")),
                f"{row['energy_ratio']:.3f}" if isinstance(row.get("energy_ratio"), (int, float)) else "-",
            )
        )
    return rows


def _memory_energy(result: Mapping[str, Any]) -> list[str]:
    """The energy ratio counting membrane updates and memory traffic too, against the teacher and against
    the student's shape run as a dense INT8 network, when the run measured them."""
    strict, int8 = result.get("student_energy_ratio_compute_memory"), result.get("student_energy_ratio_dense_student_int8")
    if not (isinstance(strict, (int, float)) and isinstance(int8, dict)):
        return []
    return [
        f"Counting the membrane updates and the memory traffic too (`eqspike energy`, 45 nm, 32 KB SRAM, "
        f"weights read per spike), the student costs {strict:.3f} of the teacher, and "
        f"{int8['compute_memory']:.2f} times (arithmetic only: {int8['compute']:.2f} times) its own shape "
        f"run as a dense INT8 network.",
        "",
    ]


def _use(config: Any, dense: bool, T: int) -> list[str]:
    """How to run the student: transformers' pipeline and `eqspike predict`."""
    return [
        "## Use",
        "",
        "```python",
        "import eqspike  # registers the student with transformers' Auto classes",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline",
        "",
        'model = AutoModelForSequenceClassification.from_pretrained("path/to/this/folder")',
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")',
        f'model.config.equilibrium.forward = "simulate"  # run the spiking network ({T} steps) in the pipeline'
        if hasattr(config, "equilibrium") and config.equilibrium.forward != "simulate"
        else "# a dense network"
        if dense
        else f"# the forward runs the spiking network ({T} steps)",
        'classify = pipeline("text-classification", model=model, tokenizer=tokenizer)',
        'print(classify("a sentence to classify"))',
        "```",
        "",
        "From the command line" + ("" if dense else ", as a spiking network at T steps") + ":",
        "",
        "```bash",
        'eqspike predict path/to/this/folder --text "a sentence to classify"' + ("" if dense else f" --time-steps {T}"),
        "```",
        "",
    ]


def environment_line(environment: Mapping[str, Any]) -> str:
    """One line naming what the scores were measured with: versions, commit, device, threads, precision."""
    packages = environment.get("packages", {})
    git = environment.get("git") or {}
    commit = f" (commit {git['commit'][:10]}{', with local changes' if git.get('dirty') else ''})" if git.get("commit") else ""
    versions = ", ".join(f"{name} {version}" for name, version in packages.items() if name != "eqspike" and version)
    return (
        f"Measured with eqspike {packages.get('eqspike')}{commit}, {versions}; Python {environment.get('python')}; "
        f"{environment.get('device_name')} ({environment.get('device')}, {environment.get('torch_threads')} threads); "
        f"{environment.get('precision')}."
    )


def write_model_card(directory: str | Path, text: str) -> Path:
    """Write (or replace, in one rename) the card in a student's folder."""
    path = Path(directory) / CARD_NAME
    write_atomic(path, text)
    return path
