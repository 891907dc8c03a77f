"""The dense student: the spiking student's own architecture with no spikes (issue 21's reference).

The same blocks, embeddings, pooler and classifier as the eqspike student, initialised from the same
teacher layers and trained with the same layerwise recipe, but every population's value is the ANN
activation itself (no threshold, no clipping, no time steps):

    context          = softmax((W_Q x + b_Q)(W_K x + b_K)^T / sqrt(d) + mask) (W_V x + b_V)
    attention_output = LayerNorm(W_O context + b_O + x)
    output           = LayerNorm(W_2 GELU(W_1 attention_output + b_1) + b_2 + attention_output)

i.e. a BERT encoder of the student's depth. The gap between it and the spiking student trained for T
is the cost of the spikes themselves; the gap between it and the teacher is the cost of the depth.
Its energy per example is that of a dense FP32 network of its shape under the same op table
(``StudentEnergy.dense_network_pj``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from transformers.activations import ACT2FN

from eqspike.students.attention import attention_scores, default_masks, key_padding_mask, merge_heads, split_heads
from eqspike.students.common import (
    SpikingBertEmbeddings,
    StudentConfig,
    StudentOutput,
    StudentPreTrainedModel,
    relative_attention_bias,
)
from eqspike.students.energy import StudentEnergy
from eqspike.students.families import FAMILIES
from eqspike.students.initialization import copy_teacher_weights, teacher_projections, teacher_shape

MODEL_TYPE = "eqspike-dense-bert"


class DenseBertConfig(StudentConfig):
    """The dense student's shape (the eqspike student's). ``time_steps`` is 1: it runs once."""

    model_type = MODEL_TYPE

    time_steps: int = 1
    weight_bits: float = 32


class DenseBertBlock(nn.Module):
    """One BERT encoder block (post-LayerNorm), without dropout."""

    def __init__(self, config: DenseBertConfig) -> None:
        super().__init__()
        h, i = config.hidden_size, config.intermediate_size
        self.heads = config.num_attention_heads
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        self.attention_output = nn.Linear(h, h)
        self.attention_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.intermediate = nn.Linear(h, i)
        self.output = nn.Linear(i, h)
        self.output_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.activation = ACT2FN[config.hidden_act]

    def forward(self, x: Tensor, key_mask: Tensor, position_bias: Tensor | float = 0.0) -> tuple[Tensor, Tensor]:
        """(the block's output, its pre-softmax attention scores, the family's position bias included)."""
        scores = attention_scores(self.query(x), self.key(x), self.heads) + position_bias
        context = merge_heads(torch.softmax(scores + key_mask, dim=-1) @ split_heads(self.value(x), self.heads))
        attended = self.attention_norm(self.attention_output(context) + x)
        return self.output_norm(self.output(self.activation(self.intermediate(attended))) + attended), scores


class DenseBertForSequenceClassification(StudentPreTrainedModel):
    """The dense student with a sequence-classification (or regression) head; the same interface as the
    spiking students (``mode`` and ``time_steps`` are accepted and have no effect)."""

    config_class = DenseBertConfig
    kind = "dense"
    description = "A dense student (the eqspike student's architecture without spikes)"
    spiking = False

    @classmethod
    def run_name(cls, settings: Any) -> str:
        return "dense"

    def __init__(self, config: DenseBertConfig) -> None:
        super().__init__(config)
        config.validate()
        self.embeddings = SpikingBertEmbeddings(config)
        self.blocks = nn.ModuleList(DenseBertBlock(config) for _ in range(config.num_hidden_layers))
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.relative_attention_bias = relative_attention_bias(config)
        self.embeddings_to_teacher, self.hidden_to_teacher = teacher_projections(config)
        self.post_init()

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        mode: str | None = None,
        time_steps: int | None = None,
        output_attention_scores: bool = False,
        labels: Tensor | None = None,
        **_: Any,
    ) -> StudentOutput:
        """Logits, the embeddings' and every block's output (``hidden_values``), and with
        ``output_attention_scores`` every block's pre-softmax scores. ``mode`` and ``time_steps`` are
        accepted for interface parity: a dense network has neither."""
        attention_mask, token_type_ids = default_masks(input_ids, attention_mask, token_type_ids)
        x = self.embeddings(input_ids, token_type_ids)
        key_mask = key_padding_mask(attention_mask, x.dtype)
        position_bias = self.position_bias(input_ids.shape[1], input_ids.device)
        hidden_values, scores = [x], []
        for block in self.blocks:
            x, block_scores = block(x, key_mask, position_bias)
            hidden_values.append(x)
            scores.append(block_scores)
        logits = self.head(x)
        return StudentOutput(
            loss=self.task_loss(logits, labels),
            logits=logits,
            hidden_values=hidden_values,
            attention_scores=scores if output_attention_scores else None,
        )

    # ------------------------------------------------------------------ in a distillation run
    def prepare(self, calibration: list[Mapping[str, Tensor]], first_batch: Mapping[str, Tensor]) -> None:
        """Nothing to calibrate: a dense network has no thresholds."""

    def spiking_run(
        self, batch: Mapping[str, Tensor], time_steps: int, rate_estimate: bool = False
    ) -> tuple[Tensor, float, float, None]:
        """Its logits, no spikes, and the energy of its multiply-accumulates (pJ, summed over the batch):
        a dense FP32 network of its shape under the same op table (``time_steps`` has no effect)."""
        logits = self(**batch).logits
        energy = StudentEnergy.of(self.config)
        return logits, 0.0, sum(energy.dense_network_pj(n) for n in batch["attention_mask"].sum(1).tolist()), None

    @classmethod
    def from_teacher(
        cls,
        teacher_model: nn.Module,
        num_hidden_layers: int | None = None,
        widths: Mapping[str, int | None] | None = None,
        **fields: Any,
    ) -> DenseBertForSequenceClassification:
        """The same initialisation as the eqspike student: every k-th teacher layer, embeddings and head."""
        student = cls(DenseBertConfig(**teacher_shape(teacher_model.config, num_hidden_layers, **(widths or {})), **fields))
        copy_teacher_weights(student, teacher_model)
        return student

    @torch.no_grad()
    def to_bert(self):
        """This network as a transformers ``BertForSequenceClassification`` that computes the same
        function (eager attention; dropout acts only in training), so that it can be the teacher of a
        spiking student of its own shape: teacher, then dense student, then spiking student."""
        from transformers import BertConfig, BertForSequenceClassification

        c = self.config
        if c.family != "bert":
            raise ValueError(
                f"a dense student of a {c.family!r} teacher is not a BERT: only the dense student of a BERT "
                f"teacher can teach a spiking student (teacher, then dense student, then spiking student)"
            )
        config = BertConfig(
            vocab_size=c.vocab_size,
            hidden_size=c.hidden_size,
            num_hidden_layers=c.num_hidden_layers,
            num_attention_heads=c.num_attention_heads,
            intermediate_size=c.intermediate_size,
            hidden_act=c.hidden_act,
            max_position_embeddings=c.max_position_embeddings,
            type_vocab_size=c.type_vocab_size,
            layer_norm_eps=c.layer_norm_eps,
            pad_token_id=c.pad_token_id,
            num_labels=c.num_labels,
            id2label=c.id2label,
            label2id=c.label2id,
            problem_type=c.problem_type,
            attn_implementation="eager",
            architectures=["BertForSequenceClassification"],
        )
        bert = BertForSequenceClassification(config).to(self.classifier.weight.device)
        bert.bert.embeddings.load_state_dict(self.embeddings.state_dict(), strict=False)
        for block, layer in zip(self.blocks, bert.bert.encoder.layer):
            for part, module in FAMILIES["bert"].layer_parts(layer).items():
                module.load_state_dict(getattr(block, part).state_dict())
        bert.bert.pooler.dense.load_state_dict(self.pooler.state_dict())
        bert.classifier.load_state_dict(self.classifier.state_dict())
        return bert.eval()
