"""The students: the spiking BERT (eqspike's), the SpikeLM baseline and the dense student (the spiking
student's architecture without spikes), which share their shape, their embeddings and head (``common``,
``attention``), their teacher initialisation (``initialization``) and their file format (``saved_files``).

Both are transformers models. ``import eqspike`` registers their configs with ``AutoConfig`` and the
models with ``AutoModelForSequenceClassification``, so a saved student loads with either, and runs in
a ``pipeline``. ``STUDENTS`` is the registry of student kinds by the name ``--student-type`` uses;
``load_student`` reads the kind a saved student names in its config.json.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification

from eqspike.students.common import StudentOutput
from eqspike.students.dense_bert import DenseBertConfig, DenseBertForSequenceClassification
from eqspike.students.initialization import WIDTHS
from eqspike.students.saved_files import StudentFileError
from eqspike.students.spikelm import SpikeLMConfig, SpikeLMForSequenceClassification
from eqspike.students.spiking_bert import SpikingBertForSequenceClassification
from eqspike.students.spiking_bert_config import SpikingBertConfig

STUDENTS = {
    cls.kind: cls
    for cls in (SpikingBertForSequenceClassification, SpikeLMForSequenceClassification, DenseBertForSequenceClassification)
}
_BY_MODEL_TYPE = {cls.config_class.model_type: cls for cls in STUDENTS.values()}

for _model in STUDENTS.values():
    AutoConfig.register(_model.config_class.model_type, _model.config_class, exist_ok=True)
    AutoModelForSequenceClassification.register(_model.config_class, _model, exist_ok=True)


def load_student(directory: str | Path, **overrides: Any):
    """Load a saved student of either kind (its config.json names the kind), in eval mode;
    ``overrides`` replace config fields (``time_steps``, ``hysteresis``, ...), checked like the rest."""
    config = Path(directory) / "config.json"
    try:
        kind = json.loads(config.read_text()).get("model_type") if config.is_file() else None
    except (ValueError, UnicodeDecodeError, AttributeError):
        kind = None  # from_pretrained below names the corrupted file
    if kind is not None and kind not in _BY_MODEL_TYPE:
        raise StudentFileError(
            f"{directory} holds a {kind!r} model, not an eqspike student ({', '.join(map(repr, _BY_MODEL_TYPE))})"
        )
    return student_class(kind).from_pretrained(directory, **overrides)


def student_class(model_type: str | None):
    """The student class of a saved config's ``model_type`` (eqspike's when it names none)."""
    return _BY_MODEL_TYPE.get(model_type, SpikingBertForSequenceClassification)


def load_student_config(directory: str | Path):
    """The config of a saved student of either kind (without its weights)."""
    return AutoConfig.from_pretrained(directory)


STUDENT_INITS = ("teacher", "random")  # or a saved student's folder (a warm start)


def saved_student_directory(path: str | Path) -> Path:
    """The folder of the saved student ``path`` names: ``path`` itself, or a run directory's student/."""
    root = Path(path)
    for candidate in (root, root / "student"):
        if (candidate / "config.json").is_file():
            return candidate
    raise StudentFileError(
        f"student_init={str(path)!r} is not valid; choose one of: {', '.join(map(repr, STUDENT_INITS))}, "
        f"or a saved student (a run directory, or its student/ folder with config.json)"
    )


def check_warm_start(path: str | Path, student_layers: int | None, widths: Mapping[str, int | None] | None = None) -> Path:
    """The saved student's folder, refused now when its depth or width is not the one asked for
    (``student_layers``, ``widths`` as ``RunConfig.student_widths`` gives them; a width not given is the teacher's)."""
    directory = saved_student_directory(path)
    config = load_student_config(directory)
    flags = {"num_hidden_layers": "student_layers", **WIDTHS}
    wanted = {"num_hidden_layers": student_layers, **(widths or {})}
    units = {
        "num_hidden_layers": "blocks",
        "hidden_size": "hidden",
        "num_attention_heads": "heads",
        "intermediate_size": "FFN units",
    }
    wrong = [
        f"{getattr(config, name)} {units[name]} against {flags[name]}={value}"
        for name, value in wanted.items()
        if value is not None and getattr(config, name) != value
    ]
    if not wrong and getattr(config, "narrower", False) and not any((widths or {}).values()):
        wrong = [f"hidden size {config.hidden_size}, narrower than its teacher's {config.teacher_hidden_size}"]
    if wrong:
        fix = " ".join(
            f"--{flags[name].replace('_', '-')} {getattr(config, name)}"
            for name in flags
            if name == "num_hidden_layers" or getattr(config, "narrower", False)
        )
        raise StudentFileError(f"student_init: {directory} does not have this student's shape ({'; '.join(wrong)}); pass {fix}")
    return directory


def _is_threshold(name: str) -> bool:
    return name.rsplit(".", 1)[-1].startswith("threshold")


def warm_start(student: nn.Module, path: str | Path) -> Path:
    """Copy into ``student`` the weights of the saved student at ``path`` (any kind, the same shape):
    every weight but the thresholds, which calibration sets for the new student's T. A dense student
    trained first, or a spiking one trained for another T or for T = infinity, is so the starting point
    of the spiking one. Returns the folder read."""
    directory = saved_student_directory(path)
    source = load_student(directory).state_dict()
    target = {name: value for name, value in student.state_dict().items() if not _is_threshold(name)}
    missing = [name for name in target if name not in source]
    shapes = [
        f"{name} {tuple(source[name].shape)} against {tuple(value.shape)}"
        for name, value in target.items()
        if name in source and source[name].shape != value.shape
    ]
    if missing or shapes:
        raise StudentFileError(
            f"student_init: {directory} does not have this student's shape "
            f"({'; '.join((shapes + [f'{n} missing' for n in missing])[:3])}); "
            f"pass the --student-layers and teacher it was trained with"
        )
    student.load_state_dict({name: source[name] for name in target}, strict=False)
    return directory


__all__ = [
    "load_student_config",
    "student_class",
    "saved_student_directory",
    "STUDENT_INITS",
    "STUDENTS",
    "check_warm_start",
    "warm_start",
    "DenseBertConfig",
    "DenseBertForSequenceClassification",
    "SpikeLMConfig",
    "SpikeLMForSequenceClassification",
    "SpikingBertConfig",
    "SpikingBertForSequenceClassification",
    "StudentOutput",
    "load_student",
]
