"""BERT's attention, shared by the students: default masks, heads split and merged, scaled dot-product
scores Q K^T / sqrt(d), the additive key-padding mask, and the classification head on [CLS].
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def default_masks(input_ids: Tensor, attention_mask: Tensor | None, token_type_ids: Tensor | None) -> tuple[Tensor, Tensor]:
    """BERT's defaults for missing inputs: every token attended to, every token of segment 0."""
    return (
        torch.ones_like(input_ids) if attention_mask is None else attention_mask,
        torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids,
    )


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(..., L, H) -> (..., heads, L, H / heads)."""
    return x.view(*x.shape[:-1], heads, x.shape[-1] // heads).transpose(-3, -2)


def merge_heads(x: Tensor) -> Tensor:
    """(..., heads, L, size) -> (..., L, heads * size)."""
    x = x.transpose(-3, -2)
    return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])


def attention_scores(q: Tensor, k: Tensor, heads: int) -> Tensor:
    """Scaled dot-product scores per head, Q K^T / sqrt(d): (..., L, H) x 2 -> (..., heads, L, L)."""
    return split_heads(q, heads) @ split_heads(k, heads).transpose(-1, -2) / math.sqrt(q.shape[-1] // heads)


def key_padding_mask(attention_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """The additive mask that keeps softmax off pad keys: 0 for real tokens, the dtype's min for pads,
    shaped (B, 1, 1, L) to broadcast over heads and queries."""
    mask = torch.zeros(attention_mask.shape, dtype=dtype, device=attention_mask.device)
    return mask.masked_fill(attention_mask == 0, torch.finfo(dtype).min)[:, None, None, :]


def classification_head(pooler: nn.Linear, classifier: nn.Linear, last_values: Tensor, activation: str = "tanh") -> Tensor:
    """The family's head: logits = classifier(act(pooler(v_[CLS]))) on the [CLS] value of the last block
    (BERT's pooler with tanh; RoBERTa's and MPNet's dense with tanh; DistilBERT's relu; ELECTRA's gelu)."""
    return classifier(_HEAD_ACTIVATIONS[activation](pooler(last_values[:, 0])))


_HEAD_ACTIVATIONS = {"tanh": torch.tanh, "relu": F.relu, "gelu": F.gelu}
