"""The students: the spiking BERT (eqspike's), the SpikeLM baseline and the dense student (the spiking
student's architecture without spikes), which share their shape, their embeddings and head, their
teacher initialisation and their file format (``common``).

Both are transformers models. ``import eqspike`` registers their configs with ``AutoConfig`` and the
models with ``AutoModelForSequenceClassification``, so a saved student loads with either, and runs in
a ``pipeline``. ``STUDENTS`` is the registry of student kinds by the name ``--student-type`` uses;
``load_student`` reads the kind a saved student names in its config.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoModelForSequenceClassification

from eqspike.students.common import StudentFileError, StudentOutput
from eqspike.students.dense_bert import DenseBertConfig, DenseBertForSequenceClassification
from eqspike.students.spikelm import SpikeLMConfig, SpikeLMForSequenceClassification
from eqspike.students.spiking_bert import SpikingBertForSequenceClassification
from eqspike.students.spiking_bert_config import SpikingBertConfig

STUDENTS = {"eqspike": SpikingBertForSequenceClassification, "spikelm": SpikeLMForSequenceClassification,
            "dense": DenseBertForSequenceClassification}
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
        raise StudentFileError(f"{directory} holds a {kind!r} model, not an eqspike student "
                               f"({', '.join(map(repr, _BY_MODEL_TYPE))})")
    return _BY_MODEL_TYPE.get(kind, SpikingBertForSequenceClassification).from_pretrained(directory, **overrides)


def load_student_config(directory: str | Path):
    """The config of a saved student of either kind (without its weights)."""
    return AutoConfig.from_pretrained(directory)


__all__ = ["load_student_config", "STUDENTS", "DenseBertConfig", "DenseBertForSequenceClassification", "SpikeLMConfig", "SpikeLMForSequenceClassification", "SpikingBertConfig",
           "SpikingBertForSequenceClassification", "StudentOutput", "load_student"]
