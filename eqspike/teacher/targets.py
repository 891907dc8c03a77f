"""TODO docstring"""

from __future__ import annotations

from typing import Any
import torch
from torch import nn


@torch.no_grad()
def teacher_targets(teacher: nn.Module, batch: dict[str, torch.Tensor], layers: list[int]) -> dict[str, Any]:
    """Logits, hidden states and pre-softmax attention scores of the teacher for the distilled layers.

    ``layers`` are 1-based teacher layer indices; hidden_states[0] (embeddings) is always included.
    Scores are recomputed from the layer's input hidden state with its own query and key projections
    (eager attention returns only the post-softmax probabilities).
    """
    out = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  token_type_ids=batch.get("token_type_ids"), output_hidden_states=True)
    hidden = out.hidden_states
    heads = teacher.config.num_attention_heads
    scores = []
    for index in layers:
        attention = teacher.bert.encoder.layer[index - 1].attention.self
        h = hidden[index - 1]
        size = h.shape[-1] // heads
        q = attention.query(h).view(*h.shape[:2], heads, size).transpose(1, 2)
        k = attention.key(h).view(*h.shape[:2], heads, size).transpose(1, 2)
        scores.append(q @ k.transpose(-1, -2) / size**0.5)
    return {"logits": out.logits, "hidden": [hidden[0]] + [hidden[i] for i in layers], "scores": scores}
