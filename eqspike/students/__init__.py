"""The students: the spiking BERT (eqspike's) and the SpikeLM baseline, which share their shape, their
embeddings and head, their teacher initialisation and their file format (``common``).

``STUDENTS`` is the registry of student kinds by the name ``--student-type`` uses; ``load_student``
reads the kind a saved student names in its config.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from eqspike.students.common import StudentFileError
from eqspike.students.spikelm import SpikeLMForSequenceClassification
from eqspike.students.spiking_bert import SpikingBertForSequenceClassification

STUDENTS = {"eqspike": SpikingBertForSequenceClassification, "spikelm": SpikeLMForSequenceClassification}
_BY_MODEL_TYPE = {cls.model_type: cls for cls in STUDENTS.values()}


def load_student(directory: str | Path):
    """Load a saved student of either kind (its config.json names the kind); in eval mode."""
    config = Path(directory) / "config.json"
    try:
        kind = json.loads(config.read_text()).get("model_type") if config.is_file() else None
    except (ValueError, UnicodeDecodeError, AttributeError):
        kind = None  # from_pretrained below names the corrupted file
    if kind is not None and kind not in _BY_MODEL_TYPE:
        raise StudentFileError(f"{directory} holds a {kind!r} model, not an eqspike student "
                               f"({', '.join(map(repr, _BY_MODEL_TYPE))})")
    return _BY_MODEL_TYPE.get(kind, SpikingBertForSequenceClassification).from_pretrained(directory)


__all__ = ["STUDENTS", "SpikeLMForSequenceClassification", "SpikingBertForSequenceClassification", "load_student"]
