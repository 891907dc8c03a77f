"""A student started from its teacher: the config fields the teacher fixes (its shape, narrower where
asked, and the uniform layer map: every k-th layer), the channels a narrower student keeps (weight
selection), TinyBERT's projections W_e, W_h, and the copy of the teacher's weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from eqspike.students.common import StudentConfig
from eqspike.students.families import family_of

WIDTHS = {"hidden_size": "student_hidden", "num_attention_heads": "student_heads", "intermediate_size": "student_intermediate"}


def teacher_shape(
    teacher_config: Any,
    num_hidden_layers: int | None = None,
    hidden_size: int | None = None,
    num_attention_heads: int | None = None,
    intermediate_size: int | None = None,
) -> dict[str, Any]:
    """The student config fields a teacher's config fixes: its family's shape, labels and the layer map;
    with a width given, the student is that much narrower than the teacher (``check_widths``)."""
    t = teacher_config
    layers = num_hidden_layers or t.num_hidden_layers
    shape = family_of(t.model_type).shape(t)
    widths = {"hidden_size": hidden_size, "num_attention_heads": num_attention_heads, "intermediate_size": intermediate_size}
    if any(widths.values()):
        widths = {name: value or shape[name] for name, value in widths.items()}
        check_widths(shape, widths)
        shape.update(
            widths,
            teacher_hidden_size=t.hidden_size,
            teacher_num_attention_heads=t.num_attention_heads,
            teacher_intermediate_size=shape["intermediate_size"],
        )
    return dict(
        **shape,
        num_hidden_layers=layers,
        num_labels=t.num_labels,
        problem_type="regression" if t.num_labels == 1 else "single_label_classification",
        id2label={int(k): v for k, v in (t.id2label or {}).items()} or None,
        teacher_layers=uniform_layer_map(t.num_hidden_layers, layers),
        teacher_num_hidden_layers=t.num_hidden_layers,
    )


def check_widths(teacher: Mapping[str, int], student: Mapping[str, int]) -> None:
    """Refuse a student wider than its teacher, or whose heads do not map onto the teacher's: its head
    count must divide the teacher's, and its hidden width be a multiple of its head count."""
    for name, flag in WIDTHS.items():
        if student[name] > teacher[name]:
            raise ValueError(
                f"{flag}={student[name]} is wider than the teacher's {teacher[name]}; choose at most {teacher[name]}"
            )
    heads, teacher_heads = student["num_attention_heads"], teacher["num_attention_heads"]
    if teacher_heads % heads:
        raise ValueError(
            f"student_heads={heads} does not divide the teacher's {teacher_heads} heads: student head j "
            f"is distilled from teacher head j * {teacher_heads} / heads; choose a divisor of {teacher_heads}"
        )
    if student["hidden_size"] % heads:
        raise ValueError(f"student_hidden={student['hidden_size']} is not a multiple of student_heads={heads}")


def evenly_spaced(count: int, total: int) -> Tensor:
    """``count`` of ``range(total)``, evenly spaced, first and last included: round(j (total - 1) / (count - 1))."""
    if count >= total:
        return torch.arange(total)
    return torch.linspace(0, total - 1, count).round().long()


def head_map(student_heads: int, teacher_heads: int) -> list[int]:
    """The teacher head student head j is initialised from and distilled to: j * H_T / H_S."""
    return [j * (teacher_heads // student_heads) for j in range(student_heads)]


@dataclass(frozen=True)
class WidthSelection:
    """Which of the teacher's channels a narrower student's start from (weight selection: Xu et al.,
    'Initializing Models with Larger Ones', ICLR 2024): ``hidden`` of the residual stream, ``attention``
    of the query, key and value outputs (whole heads ``head_map``, each head's dimensions evenly
    spaced), ``intermediate`` of the FFN, ``heads`` for a per-head bias."""

    hidden: Tensor
    attention: Tensor
    intermediate: Tensor
    heads: list[int]

    @classmethod
    def of(cls, config: StudentConfig) -> WidthSelection:
        c = config
        teacher_hidden = c.teacher_hidden_size or c.hidden_size
        teacher_heads = c.teacher_num_attention_heads or c.num_attention_heads
        heads = head_map(c.num_attention_heads, teacher_heads)
        dims = evenly_spaced(c.head_size, teacher_hidden // teacher_heads)
        attention = torch.cat([h * (teacher_hidden // teacher_heads) + dims for h in heads])
        return cls(
            evenly_spaced(c.hidden_size, teacher_hidden),
            attention,
            evenly_spaced(c.intermediate_size, c.teacher_intermediate_size or c.intermediate_size),
            heads,
        )


def teacher_projections(config: StudentConfig) -> tuple[nn.Linear | None, nn.Linear | None]:
    """TinyBERT's W_e and W_h: the student's embeddings and hidden states mapped to the teacher's width
    for the hidden-state loss (used only in distillation), or (None, None) for a student of its width."""
    if not config.narrower:
        return None, None
    return (
        nn.Linear(config.hidden_size, config.teacher_hidden_size, bias=False),
        nn.Linear(config.hidden_size, config.teacher_hidden_size, bias=False),
    )


def _copy(target: nn.Module, source: nn.Module, rows: Tensor | None = None, columns: Tensor | None = None) -> None:
    """target <- source, or the rows (outputs) and columns (inputs) of source selected."""
    weight, bias = source.weight, source.bias
    if rows is not None:
        weight, bias = weight[rows], bias[rows]
    if columns is not None:
        weight = weight[:, columns]
    target.weight.copy_(weight)
    target.bias.copy_(bias)


@torch.no_grad()
def copy_teacher_weights(student: nn.Module, teacher_model: nn.Module, modules: Mapping[str, Any] | None = None) -> None:
    """Copy the teacher's embeddings, head (and MPNet's relative position bias) and, into student block m,
    teacher layer ``student.config.teacher_layers[m]``, wherever the teacher's family keeps them; a
    narrower student copies the channels ``WidthSelection`` picks, and its W_e, W_h start as the
    selection's inverse (student channel j -> the teacher channel it came from). ``modules`` maps each
    part of a block (``families.BLOCK_PARTS``) to a function that returns the student's module for it;
    by default the block's attribute of that name."""
    family = family_of(teacher_model.config.model_type)
    encoder = family.encoder(teacher_model)
    pick = WidthSelection.of(student.config) if student.config.teacher_hidden_size is not None else None
    hidden, attention, inner = (pick.hidden, pick.attention, pick.intermediate) if pick else (None, None, None)
    embeddings, mine = encoder.embeddings, student.embeddings
    projected = mine.projection is not None  # ELECTRA: the embeddings keep their width; the projection narrows
    embedding_columns = None if projected else hidden
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        if getattr(mine, name, None) is not None:
            weight = getattr(embeddings, name).weight
            getattr(mine, name).weight.copy_(weight if embedding_columns is None else weight[:, embedding_columns])
    _copy(mine.LayerNorm, embeddings.LayerNorm, embedding_columns)
    if projected:
        _copy(mine.projection, encoder.embeddings_project, hidden)
    selected = {
        "query": (attention, hidden),
        "key": (attention, hidden),
        "value": (attention, hidden),
        "attention_output": (hidden, attention),
        "attention_norm": (hidden, None),
        "intermediate": (inner, hidden),
        "output": (hidden, inner),
        "output_norm": (hidden, None),
    }
    layers = family.layer_list(teacher_model)
    for block, index in zip(student.blocks, student.config.teacher_layers):
        for part, module in family.layer_parts(layers[index - 1]).items():
            _copy(modules[part](block) if modules is not None else getattr(block, part), module, *selected[part])
    dense, out = family.head_modules(teacher_model)
    if dense is not None:
        _copy(student.pooler, dense, hidden, hidden)
    _copy(student.classifier, out, None, hidden)
    if family.relative_attention:
        bias = encoder.encoder.relative_attention_bias.weight
        student.relative_attention_bias.weight.copy_(bias if pick is None else bias[:, pick.heads])
    if student.config.narrower:
        for projection in (student.embeddings_to_teacher, student.hidden_to_teacher):
            projection.weight.zero_()
            projection.weight[hidden, torch.arange(len(hidden))] = 1.0


def uniform_layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """1-based teacher layer distilled into each student block: round((m+1) * L_T / M), m = 0..M-1."""
    if student_layers > teacher_layers:
        raise ValueError(f"the student has {student_layers} blocks but the teacher only {teacher_layers} layers")
    return [round((m + 1) * teacher_layers / student_layers) for m in range(student_layers)]
