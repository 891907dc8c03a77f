"""Layerwise distillation of a BERT teacher into the spiking student (docs/design.md §6).

Stage 1, intermediate layers:  L = w_h * sum_m MSE(v_m, H_T[k(m)]) + w_a * sum_m MSE(S_m, S_T[k(m)])
    v_m: decoded values of the student's embeddings (m = 0) and block outputs at equilibrium (for a
    student narrower than its teacher W_e v_0 and W_h v_m, TinyBERT's learned projections; its head j
    is compared with teacher head j * H_T / H_S);
    S_m: pre-softmax attention scores; k(m): the uniform layer map. Pad tokens (and pairs with a pad)
    are masked out of every term.
Stage 2, prediction layer:     L = tau^2 * CE(softmax(z_T / tau), softmax(z_S / tau)) + w_g * CE(z_S, y)
    (MSE to the teacher's output, and to the gold score, for regression).

Every loss is a mean over the global batch of a step, however the batch is cut (``Share``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from eqspike.students.energy import StudentEnergy
from eqspike.students.initialization import head_map


@dataclass(frozen=True)
class LossWeights:
    """The weights of the distillation losses: w_h, w_a (stage 1), w_g and the temperature tau (stage 2)."""

    hidden_weight: float = 1.0
    attention_weight: float = 1.0
    gold_weight: float = 0.0
    temperature: float = 1.0


@dataclass(frozen=True)
class Share:
    """What the losses of one part of a global batch divide by: the global batch's number of examples,
    of real tokens and of (query, key) pairs of real tokens; the number of replicas DDP averages over;
    and whether the part holds real examples (a stand-in for an empty part has weight 0)."""

    examples: float
    tokens: float
    pairs: float
    replicas: int = 1
    real: bool = True
    teacher_pj: float = 0.0  # the teacher's energy on the global batch (for an energy budget)

    @classmethod
    def of(cls, lengths: list[int], replicas: int = 1) -> Share:
        """The counts of a global batch whose sequences have ``lengths`` real tokens."""
        return cls(float(len(lengths)), float(sum(lengths)), float(sum(n * n for n in lengths)), replicas)

    @classmethod
    def whole(cls, attention_mask: Tensor) -> Share:
        """A batch that is a whole global batch of one process (plain means)."""
        return cls.of(attention_mask.sum(1).tolist())


def masked_mse(student: Tensor, teacher: Tensor, mask: Tensor, positions: float | None = None) -> Tensor:
    """sum_{mask} (s - t)^2 / (positions * features): the mean squared error per feature over
    ``positions`` masked positions (default: the positions of ``mask``). ``mask`` (0/1) has the
    leading dimensions of ``student`` and size 1 on its feature dimensions."""
    dtype = torch.promote_types(student.dtype, torch.float32)  # bf16 (autocast) outputs: loss in float32
    student, teacher, mask = student.to(dtype), teacher.to(dtype), mask.to(dtype)
    features = student.numel() // mask.numel()
    positions = mask.sum() if positions is None else positions
    return ((student - teacher) ** 2 * mask).sum() / (max(float(positions), 1.0) * features)


def intermediate_loss(
    out, targets: dict[str, Any], attention_mask: Tensor, weights: LossWeights, share: Share | None = None
) -> dict[str, Tensor]:
    """w_h * sum_m MSE(v_m, H_T[k(m)]) + w_a * sum_m MSE(S_m, S_T[k(m)]) over real tokens and real
    (query, key) pairs."""
    share = share or Share.whole(attention_mask)
    mask = attention_mask * float(share.real)
    tokens = mask[:, :, None]
    pairs = mask[:, None, :, None] * mask[:, None, None, :]
    hidden = sum(masked_mse(v, h, tokens, share.tokens) for v, h in zip(out.hidden_values, targets["hidden"]))
    attention = sum(
        masked_mse(s, _mapped_heads(t, s.shape[-3]), pairs, share.pairs) for s, t in zip(out.attention_scores, targets["scores"])
    )
    hidden, attention = hidden * share.replicas, attention * share.replicas
    return {
        "loss": weights.hidden_weight * hidden + weights.attention_weight * attention,
        "hidden": hidden.detach(),
        "attention": attention.detach(),
    }


def _mapped_heads(teacher_scores: Tensor, student_heads: int) -> Tensor:
    """The teacher's scores of the heads the student's are distilled to (``head_map``: j * H_T / H_S)."""
    heads = teacher_scores.shape[-3]
    if heads == student_heads:
        return teacher_scores
    return teacher_scores[..., head_map(student_heads, heads), :, :]


def spike_energy(rates: dict[str, Tensor], attention_mask: Tensor, model: StudentEnergy, time_steps: int, share: Share) -> Tensor:
    """The energy of the spikes the rates stand for, relative to the teacher's on the global batch:
    sum_examples accumulate_pj(T |a|) / teacher_pj. For rates of the T-step quantizer, T |a| is the
    number of spikes a neuron needs at the least (the simulation adds the ones that cancel)."""
    counts = {name: rate.abs() * time_steps for name, rate in rates.items()}
    return model.accumulate_pj(counts, attention_mask).sum() * float(share.real) / max(share.teacher_pj, 1e-9) * share.replicas


def _example_mean(per_example: Tensor, share: Share) -> Tensor:
    """sum over this part's examples / the global number of examples, times the replicas."""
    return per_example.sum() * float(share.real) / max(share.examples, 1.0) * share.replicas


def _gold_per_example(logits: Tensor, labels: Tensor, regression: bool) -> Tensor:
    labels = labels.to(logits.device)
    if regression:
        return (logits.view(-1).float() - labels.float()) ** 2
    return F.cross_entropy(logits.float(), labels, reduction="none")


def gold_loss(logits: Tensor, labels: Tensor, regression: bool, share: Share | None = None) -> Tensor:
    """Cross-entropy with the gold labels (squared error with the gold score for regression),
    averaged over the global batch."""
    return _example_mean(_gold_per_example(logits, labels, regression), share or Share(float(len(logits)), 0.0, 0.0))


def prediction_loss(
    logits: Tensor, teacher_logits: Tensor, labels: Tensor, regression: bool, weights: LossWeights, share: Share | None = None
) -> dict[str, Tensor]:
    """tau^2 * CE(softmax(z_T / tau), softmax(z_S / tau)) + w_g * gold (squared errors for regression)."""
    share = share or Share(float(len(logits)), 0.0, 0.0)
    dtype = torch.promote_types(logits.dtype, torch.float32)
    logits, teacher_logits = logits.to(dtype), teacher_logits.to(dtype)
    if regression:
        per_example = (logits.view(-1) - teacher_logits.view(-1)) ** 2
    else:
        tau = weights.temperature
        per_example = -(F.softmax(teacher_logits / tau, -1) * F.log_softmax(logits / tau, -1)).sum(-1) * tau**2
    soft = _example_mean(per_example, share)
    gold = gold_loss(logits, labels, regression, share)
    return {"loss": soft + weights.gold_weight * gold, "soft": soft.detach(), "gold": gold.detach()}
