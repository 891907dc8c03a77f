"""The teacher's targets for distillation: logits, hidden states and pre-softmax attention scores,
computed live (``live_targets``) or read from the cache (``cached_targets``) behind one interface: a
function of the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from eqspike.students.attention import attention_scores
from eqspike.students.families import family_of


@torch.no_grad()
def teacher_targets(teacher: nn.Module, batch: dict[str, torch.Tensor], layers: list[int]) -> dict[str, Any]:
    """Logits, hidden states and pre-softmax attention scores of the teacher for the distilled layers.

    ``layers`` are 1-based teacher layer indices; hidden_states[0] (embeddings) is always included.
    Scores are recomputed from the layer's input hidden state with its own query and key projections
    (eager attention returns only the post-softmax probabilities), plus the relative position bias of
    a family that has one (MPNet): what enters the softmax before the padding mask.
    """
    out = teacher(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        token_type_ids=batch.get("token_type_ids"),
        output_hidden_states=True,
    )
    hidden = out.hidden_states
    heads = teacher.config.num_attention_heads
    family = family_of(teacher.config.model_type)
    modules, bias = family.layer_list(teacher), family.position_bias(teacher, hidden[0])
    scores = []
    for index in layers:
        parts, h = family.layer_parts(modules[index - 1]), hidden[index - 1]
        s = attention_scores(parts["query"](h), parts["key"](h), heads)
        scores.append(s if bias is None else s + bias)
    return {"logits": out.logits, "hidden": [hidden[0]] + [hidden[i] for i in layers], "scores": scores}


TargetsFn = Callable[[dict[str, torch.Tensor]], dict[str, Any]]


def live_targets(teacher: nn.Module, layers: list[int]) -> TargetsFn:
    """The teacher run on every batch (no gradient)."""
    return lambda batch: teacher_targets(teacher, batch, layers)


def cached_targets(cache: Any, device: torch.device) -> TargetsFn:
    """The same targets read back from a ``TeacherCache`` by the batch's example indices."""
    return lambda batch: cache.targets(batch["index"].tolist(), batch["input_ids"].shape[1], device)
