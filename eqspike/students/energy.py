"""A student's operation counts and its energy under the papers' convention (docs/design.md §7; 45 nm
CMOS figures, Horowitz 2014):

    E_SNN = 0.9 pJ x accumulates + 4.6 pJ x multiply-accumulates that remain
    E_ANN = 4.6 pJ x the dense network's multiply-accumulates

Accumulates are counted from the spikes actually fired: every spike of a neuron adds one synaptic
weight at each of its targets (its fan-out). What a spiking BERT still does in full precision is
counted as multiply-accumulates per time step: the score scaling and softmax, LayerNorm, GELU, the
rate normalisation and current increment of populations fed by a non-linear operation, and once per
example the embedding LayerNorm and the classifier head. The ANN is counted with the same per-op
costs, so that the ratio compares like with like. These are estimates of arithmetic energy only
(no memory traffic), as in the SpikingBERT and SpikeLM papers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from eqspike.students.families import family_of

ACCUMULATE_PJ = 0.9


MAC_PJ = 4.6


SOFTMAX_OPS_PER_SCORE = 3  # exp, running sum, divide


SCALE_OPS_PER_SCORE = 1  # 1/sqrt(d) (and the mask add)


LAYERNORM_OPS_PER_ELEMENT = 5  # mean, variance, normalise, scale, shift


GELU_OPS_PER_ELEMENT = 4  # tanh approximation


DRIVE_OPS_PER_NEURON = 3  # rate normalisation 1/t, and t*F(t) - (t-1)*F(t-1)


def synaptic_accumulates(spike_counts: Mapping[str, Tensor], fan_out: Mapping[str, Tensor | float]) -> Tensor:
    """Per example: sum over populations of (spikes fired by each neuron) x (its fan-out).

    spike_counts[name]: (batch, ...) counts sum_t |s(t)|; fan_out[name]: a number, or a tensor that
    broadcasts against the counts (e.g. per example and token). Populations without a fan-out entry
    drive nothing (e.g. the output read by a full-precision head) and are not counted.
    """
    total: Tensor | float = 0.0
    for name, count in spike_counts.items():
        if name in fan_out:
            total = total + (count * fan_out[name]).flatten(1).sum(1)
    return torch.as_tensor(total)


def bert_fan_out(
    hidden: int, intermediate: int, layers: int, lengths: Tensor, mask: Tensor, feedback: bool
) -> dict[str, Tensor | float]:
    """Fan-out of each population of the spiking BERT student (eqspike.students.spiking_bert), per neuron.

    input of a block (embeddings or previous output): W_K, W_V, W_Q rows (3H) + the residual (1);
    key and value: every query position of the example (L) in QK^T and PV;
    context: W_O (H); attention_output: W_1 (I) + the residual (1); intermediate: W_2 (H).
    Pad tokens fire nothing that is counted (``mask``).
    """
    token = mask[:, :, None].float()
    per_query = lengths.float()[:, None, None] * token
    fan: dict[str, Tensor | float] = {"embeddings": (3 * hidden + 1) * token}
    for m in range(layers):
        fan[f"block{m}.key"] = per_query
        fan[f"block{m}.value"] = per_query
        fan[f"block{m}.context"] = hidden * token
        fan[f"block{m}.attention_output"] = (intermediate + 1) * token
        fan[f"block{m}.intermediate"] = hidden * token
        if m + 1 < layers:
            fan[f"block{m}.output"] = (3 * hidden + 1) * token
        elif feedback:
            fan[f"block{m}.output"] = hidden * token
    return fan


def student_macs(hidden: int, intermediate: int, heads: int, layers: int, labels: int, length: float, time_steps: int) -> float:
    """Multiply-accumulates the spiking student still does for one example of ``length`` tokens."""
    per_step_per_block = (
        heads * length * length * (SCALE_OPS_PER_SCORE + SOFTMAX_OPS_PER_SCORE)
        + 2 * length * hidden * LAYERNORM_OPS_PER_ELEMENT
        + length * intermediate * GELU_OPS_PER_ELEMENT
        # non-linearly fed populations: context, attention_output, output (H each), intermediate (I)
        + length * (3 * hidden + intermediate) * DRIVE_OPS_PER_NEURON
    )
    once = length * hidden * LAYERNORM_OPS_PER_ELEMENT + hidden * hidden + hidden * labels
    return time_steps * layers * per_step_per_block + once


def bert_macs(hidden: int, intermediate: int, heads: int, layers: int, labels: int, length: float) -> float:
    """Multiply-accumulates of a dense BERT encoder + pooler + classifier for one example."""
    per_layer = (
        length * (4 * hidden * hidden + 2 * hidden * intermediate)  # Q, K, V, O projections and the FFN
        + 2 * length * length * hidden  # Q K^T and P V
        + heads * length * length * (SCALE_OPS_PER_SCORE + SOFTMAX_OPS_PER_SCORE)
        + 2 * length * hidden * LAYERNORM_OPS_PER_ELEMENT
        + length * intermediate * GELU_OPS_PER_ELEMENT
    )
    return layers * per_layer + length * hidden * LAYERNORM_OPS_PER_ELEMENT + hidden * hidden + hidden * labels


SPIKELM_MEMBRANE_OPS = 2  # u_t = 0.25 * u_{t-1} * (alpha - s) + x_t: two multiplies per neuron and step


SPIKELM_ENCODER_OPS = 1  # K/V spike encoders: u / alpha, rounded


def spikelm_macs(hidden: int, intermediate: int, heads: int, layers: int, labels: int, length: float, time_steps: int) -> float:
    """Multiply-accumulates the SpikeLM baseline still does for one example (same per-op costs)."""
    per_step_per_block = (
        heads * length * length * (SCALE_OPS_PER_SCORE + SOFTMAX_OPS_PER_SCORE)
        + 2 * length * hidden * LAYERNORM_OPS_PER_ELEMENT
        + length * intermediate * GELU_OPS_PER_ELEMENT
        + length * (5 * hidden + intermediate) * SPIKELM_MEMBRANE_OPS  # inputs of the six spiking linears
        + length * 2 * hidden * SPIKELM_ENCODER_OPS
        + 2 * length * hidden  # averaging the block output over T, the residual adds
    )
    once = length * hidden * LAYERNORM_OPS_PER_ELEMENT + hidden * hidden + hidden * labels
    return time_steps * layers * per_step_per_block + once


@dataclass(frozen=True)
class StudentEnergy:
    """The energy model of one spiking BERT student shape and of its dense teacher (costs above).

    Per example of ``length`` tokens: the teacher costs ``teacher_pj``; the student costs
    ``accumulate_pj`` (its spikes, counted at their targets) + ``dense_pj`` (what stays
    multiply-accumulate, which grows with T)."""

    hidden: int
    intermediate: int
    heads: int
    layers: int
    labels: int
    teacher_layers: int
    feedback: bool = False
    # the teacher's width, where the student is narrower (None: the student's)
    teacher_hidden: int | None = None
    teacher_intermediate: int | None = None
    teacher_heads: int | None = None
    # what the encoder family adds: embeddings narrower than hidden and projected (ELECTRA), and a
    # relative position bias added to every score (MPNet)
    embedding_size: int | None = None
    relative_bias: bool = False

    @classmethod
    def of(cls, config) -> StudentEnergy:
        """From a student's config (the teacher's depth, and its width if wider, are recorded there)."""
        return cls(
            config.hidden_size,
            config.intermediate_size,
            config.num_attention_heads,
            config.num_hidden_layers,
            config.num_labels,
            config.teacher_num_hidden_layers or config.num_hidden_layers,
            getattr(config, "feedback", False),
            getattr(config, "teacher_hidden_size", None),
            getattr(config, "teacher_intermediate_size", None),
            getattr(config, "teacher_num_attention_heads", None),
            getattr(config, "embedding_size", None),
            bool(getattr(config, "relative_attention_num_buckets", 0)),
        )

    @classmethod
    def of_teacher(cls, teacher_config) -> StudentEnergy:
        """The shape of a dense teacher from its transformers config (its family's FFN width), as a network
        whose every layer is its own (the dense baseline a student is priced against)."""
        t = teacher_config
        width = family_of(t.model_type).shape(t)
        return cls(
            t.hidden_size,
            width["intermediate_size"],
            t.num_attention_heads,
            t.num_hidden_layers,
            t.num_labels,
            t.num_hidden_layers,
        )

    @property
    def teacher(self) -> StudentEnergy:
        """The teacher's shape: its depth, and its width (the student's unless recorded wider)."""
        return StudentEnergy(
            self.teacher_hidden or self.hidden,
            self.teacher_intermediate or self.intermediate,
            self.teacher_heads or self.heads,
            self.teacher_layers,
            self.labels,
            self.teacher_layers,
            embedding_size=self.embedding_size,
            relative_bias=self.relative_bias,
        )

    def family_macs(self, length: float, passes: int) -> float:
        """What the family adds to a network of this shape for one example: the embedding projection once
        (L x E x H), and one add per score, block and pass for a relative position bias."""
        projection = length * self.embedding_size * self.hidden if self.embedding_size else 0.0
        bias = passes * self.layers * self.heads * length * length if self.relative_bias else 0.0
        return projection + bias

    def teacher_pj(self, length: float) -> float:
        t = self.teacher
        return MAC_PJ * (bert_macs(t.hidden, t.intermediate, t.heads, t.layers, self.labels, length) + t.family_macs(length, 1))

    def dense_network_pj(self, length: float) -> float:
        """The student's own shape run as a dense network (the dense student; same op table)."""
        return MAC_PJ * (
            bert_macs(self.hidden, self.intermediate, self.heads, self.layers, self.labels, length) + self.family_macs(length, 1)
        )

    def dense_pj(self, length: float, time_steps: int) -> float:
        return MAC_PJ * (
            student_macs(self.hidden, self.intermediate, self.heads, self.layers, self.labels, length, time_steps)
            + self.family_macs(length, time_steps)
        )

    def fan_out(self, attention_mask: Tensor) -> dict[str, Tensor | float]:
        return bert_fan_out(self.hidden, self.intermediate, self.layers, attention_mask.sum(1), attention_mask, self.feedback)

    def accumulate_pj(self, spike_counts: Mapping[str, Tensor], attention_mask: Tensor) -> Tensor:
        """Per example: 0.9 pJ x every spike of ``spike_counts`` (per neuron, (batch, tokens, width))
        at each of its targets. Differentiable in the counts (e.g. T |a| from quantized rates)."""
        return ACCUMULATE_PJ * synaptic_accumulates(spike_counts, self.fan_out(attention_mask))


def spikelm_energy_pj(config, accumulates: float, lengths: list[int], time_steps: int) -> float:
    """Total energy of the SpikeLM baseline over examples of ``lengths`` tokens: its counted synaptic
    ``accumulates`` plus the multiply-accumulates it still does (``spikelm_macs``)."""
    c = config
    shape = StudentEnergy.of(c)
    return ACCUMULATE_PJ * accumulates + MAC_PJ * sum(
        spikelm_macs(c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_hidden_layers, c.num_labels, n, time_steps)
        + shape.family_macs(n, time_steps)
        for n in lengths
    )
