"""A saved student's files (config.json, model.safetensors) and the checks that refuse a missing,
corrupted, foreign or non-finite one by file name.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from eqspike.errors import EqspikeError

CONFIG_NAME = "config.json"


WEIGHTS_NAME = "model.safetensors"


class StudentFileError(EqspikeError):
    """A saved student's files are missing, corrupted or not finite (the message names the file)."""


def check_student_files(directory: str | Path, model_type: str) -> None:
    """Refuse a saved student by file name: config.json or model.safetensors missing, unreadable, of
    another model type, or holding non-finite weights."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    if not config_path.is_file():
        raise StudentFileError(f"{directory} is not a saved student: {CONFIG_NAME} is missing")
    try:
        data = json.loads(config_path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise StudentFileError(f"{config_path} is corrupted: {str(error).splitlines()[0][:120]}") from None
    if not isinstance(data, dict) or data.get("model_type") != model_type:
        kind = data.get("model_type") if isinstance(data, dict) else None
        raise StudentFileError(f"{directory} is not a {model_type} student: model_type is {kind!r}")
    if not weights_path.is_file():
        raise StudentFileError(f"{directory} has no {WEIGHTS_NAME}")
    try:
        state = load_file(str(weights_path))
    except Exception as error:  # safetensors raises its own error types for truncated or garbled files
        raise StudentFileError(
            f"{weights_path} is corrupted ({type(error).__name__}: {str(error).splitlines()[0][:120]})"
        ) from None
    bad = [name for name, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        raise StudentFileError(
            f"{weights_path} holds non-finite weights ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); it cannot be used"
        )
