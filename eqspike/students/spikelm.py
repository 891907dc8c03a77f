"""The surrogate-gradient baseline: a SpikeLM student (Xing et al., ICML 2024) of the same encoder shape
as eqspike's, trained by backprop through time (docs/design.md §9).

Elastic bi-spiking neuron (ternary spikes of amplitude alpha):

    s_t = alpha_t * clamp(round(u_t / alpha_t), -1, 1)          (fires +-alpha when |u| > alpha / 2)
    ds/du = 1 where |u| <= alpha_t, else 0                       (clipped straight-through gradient)
    alpha_t = 2 * mean|u_t| on the first batch, then frozen      (one per layer and time step)

Membrane of a spiking linear over T steps (``reset="spikelm"``, as in their code):

    u_0 = x_0,   u_t = 0.25 * u_{t-1} * stopgrad(alpha_{t-1} - s_{t-1}) + x_t,   y_t = W s_t + b

or ``reset="soft"``: u_t = 0.25 * (u_{t-1} - s_{t-1}) + x_t. Spikes sit on the inputs of the six
linears of every block (Q, K, V, attention output, FFN in, FFN out) and on K and V themselves; Q is
real; softmax, LayerNorm, GELU, the residuals, the embeddings and the head are full precision. The
embedding is repeated over T and every block's output is averaged over T (rate decoding).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from transformers.activations import ACT2FN

from eqspike.errors import check_choice, check_int_at_least
from eqspike.students.attention import attention_scores, default_masks, key_padding_mask, merge_heads, split_heads
from eqspike.students.common import (
    SpikingBertEmbeddings,
    StudentConfig,
    StudentOutput,
    StudentPreTrainedModel,
    relative_attention_bias,
)
from eqspike.students.energy import ACCUMULATE_PJ, spikelm_energy_pj
from eqspike.students.initialization import copy_teacher_weights, teacher_projections, teacher_shape

MODEL_TYPE = "eqspike-spikelm-bert"


RESETS = ("spikelm", "soft")


class ElasticBiSpike(torch.autograd.Function):
    """Ternary spikes of amplitude alpha with the clipped straight-through gradient."""

    @staticmethod
    def forward(ctx, u: Tensor, alpha: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(u, alpha)
        return alpha * torch.clamp(torch.round(u / alpha), -1, 1)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        u, alpha = ctx.saved_tensors
        return grad * ((u / alpha).abs() <= 1).to(grad.dtype), None


class ElasticBiSpiking(nn.Module):
    """Per-time-step amplitudes alpha_t, set to 2 mean|u_t| on the first batch and then frozen.
    Counts the spikes it emits (for firing rates and energy) while ``counting`` is on."""

    def __init__(self, time_steps: int) -> None:
        super().__init__()
        self.register_buffer("alpha", torch.ones(time_steps))
        self.register_buffer("initialised", torch.zeros(time_steps, dtype=torch.bool))
        self.counting = False
        self.spikes = 0.0  # number of non-zero spikes since count_spikes(True)
        self.spikes_times_length = 0.0  # each spike weighted by its example's number of tokens
        self.neuron_steps = 0.0  # neurons x steps observed

    def forward(self, u: Tensor, t: int, mask: Tensor | None = None) -> Tensor:
        if not bool(self.initialised[t]):
            with torch.no_grad():
                self.alpha[t] = (2 * u.abs().mean()).clamp_min(1e-5)
                self.initialised[t] = True
        s = ElasticBiSpike.apply(u, self.alpha[t].detach().clone())
        if self.counting:
            fired = (s != 0).to(u.dtype)
            if mask is not None:
                fired = fired * mask
                self.neuron_steps += float(mask.sum()) * u.shape[-1]
                per_example = fired.flatten(1).sum(1)
                self.spikes_times_length += float((per_example * mask.flatten(1).sum(1)).sum())
            else:
                self.neuron_steps += u.numel()
            self.spikes += float(fired.sum())
        return s


class SpikeLinear(nn.Module):
    """Spiking neurons on the input of a linear layer, over T steps: y_t = W s_t + b."""

    def __init__(self, in_features: int, out_features: int, time_steps: int, reset: str) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.neurons = ElasticBiSpiking(time_steps)
        self.reset = reset

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:  # x: (T, B, L, D)
        outputs, u, s = [], None, None
        for t in range(x.shape[0]):
            if u is None:
                u = x[t]
            elif self.reset == "spikelm":
                u = 0.25 * u * (self.neurons.alpha[t - 1].clone() - s).detach() + x[t]
            else:
                u = 0.25 * (u - s) + x[t]
            s = self.neurons(u, t, mask)
            outputs.append(self.linear(s))
        return torch.stack(outputs)


class SpikeLMConfig(StudentConfig):
    """The baseline's shape (the eqspike student's), its T and its membrane reset."""

    model_type = MODEL_TYPE

    time_steps: int = 4
    reset: str = "spikelm"
    weight_bits: float = 32  # SpikeLM keeps full-precision weights

    def validate(self) -> None:
        super().validate()
        check_int_at_least("time_steps", self.time_steps, 1)
        check_choice("reset", self.reset, RESETS)


class SpikeLMBlock(nn.Module):
    def __init__(self, config: SpikeLMConfig) -> None:
        super().__init__()
        h, i, T, r = config.hidden_size, config.intermediate_size, config.time_steps, config.reset
        self.query = SpikeLinear(h, h, T, r)
        self.key = SpikeLinear(h, h, T, r)
        self.value = SpikeLinear(h, h, T, r)
        self.key_spikes = ElasticBiSpiking(T)
        self.value_spikes = ElasticBiSpiking(T)
        self.attention_output = SpikeLinear(h, h, T, r)
        self.attention_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.intermediate = SpikeLinear(h, i, T, r)
        self.output = SpikeLinear(i, h, T, r)
        self.output_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)

    def spiking_modules(self) -> dict[str, ElasticBiSpiking]:
        return {
            "query_in": self.query.neurons,
            "key_in": self.key.neurons,
            "value_in": self.value.neurons,
            "key": self.key_spikes,
            "value": self.value_spikes,
            "context": self.attention_output.neurons,
            "attention_output": self.intermediate.neurons,
            "intermediate": self.output.neurons,
        }


class SpikeLMForSequenceClassification(StudentPreTrainedModel):
    """The SpikeLM baseline with a sequence-classification head (same interface as the eqspike student)."""

    config_class = SpikeLMConfig
    kind = "spikelm"
    description = "A SpikeLM baseline (surrogate gradients, BPTT)"

    @classmethod
    def run_name(cls, settings: Any) -> str:
        return f"spikelm-T{settings.spikelm_time_steps}"

    @classmethod
    def task_loss_only(cls, settings: Any) -> bool:
        return settings.spikelm_recipe == "task"

    def __init__(self, config: SpikeLMConfig) -> None:
        super().__init__(config)
        config.validate()
        self.embeddings = SpikingBertEmbeddings(config)
        self.blocks = nn.ModuleList(SpikeLMBlock(config) for _ in range(config.num_hidden_layers))
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.relative_attention_bias = relative_attention_bias(config)
        self.embeddings_to_teacher, self.hidden_to_teacher = teacher_projections(config)
        self.activation = ACT2FN[config.hidden_act]
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
        """``mode`` is accepted for interface parity and ignored: the network is always simulated for
        its trained T (its amplitudes alpha_t exist for those steps only). With ``labels``, ``loss`` is
        the task loss."""
        cfg = self.config
        if time_steps is not None and time_steps != cfg.time_steps:
            raise ValueError(f"this SpikeLM student was trained with time_steps={cfg.time_steps}; got {time_steps}")
        attention_mask, token_type_ids = default_masks(input_ids, attention_mask, token_type_ids)
        T, heads = cfg.time_steps, cfg.num_attention_heads
        mask = attention_mask[:, :, None].to(torch.float32)
        key_mask = key_padding_mask(attention_mask, torch.float32)
        embedded = self.embeddings(input_ids, token_type_ids)
        x = embedded.unsqueeze(0).expand(T, *embedded.shape)
        hidden_values, scores = [embedded], []
        position_bias = self.position_bias(input_ids.shape[1], input_ids.device)

        for block in self.blocks:
            q = block.query(x, mask)
            k = torch.stack([block.key_spikes(kt, t, mask) for t, kt in enumerate(block.key(x, mask))])
            v = torch.stack([block.value_spikes(vt, t, mask) for t, vt in enumerate(block.value(x, mask))])
            s = attention_scores(q, k, heads) + position_bias
            if output_attention_scores:
                scores.append(s.mean(0))
            context = merge_heads(torch.softmax(s + key_mask, dim=-1) @ split_heads(v, heads))
            attended = block.attention_norm(block.attention_output(context, mask) + x)
            x = block.output_norm(block.output(self.activation(block.intermediate(attended, mask)), mask) + attended)
            hidden_values.append(x.mean(0))
        logits = self.head(hidden_values[-1])
        return StudentOutput(
            loss=self.task_loss(logits, labels),
            logits=logits,
            hidden_values=hidden_values,
            attention_scores=scores if output_attention_scores else None,
        )

    # ------------------------------------------------------------------ statistics
    def spiking_modules(self) -> dict[str, ElasticBiSpiking]:
        return {
            f"block{m}.{name}": module for m, block in enumerate(self.blocks) for name, module in block.spiking_modules().items()
        }

    def count_spikes(self, on: bool) -> None:
        for module in self.spiking_modules().values():
            module.counting, module.spikes, module.spikes_times_length, module.neuron_steps = on, 0.0, 0.0, 0.0

    def spike_statistics_by_module(self) -> dict[str, dict[str, float]]:
        """Per spiking module since count_spikes(True): spikes, neuron_steps and synaptic accumulates.
        Fan-out: a spike on a linear's input reaches its out_features; a K or V spike reaches every
        query position of its example."""
        cfg = self.config
        stats = {}
        for name, module in self.spiking_modules().items():
            part = name.split(".")[1]
            if part in ("key", "value"):
                accumulates = module.spikes_times_length
            else:
                accumulates = module.spikes * (cfg.intermediate_size if part == "attention_output" else cfg.hidden_size)
            stats[name] = {"spikes": module.spikes, "neuron_steps": module.neuron_steps, "accumulates": accumulates}
        return stats

    def spike_statistics(self) -> tuple[float, float]:
        """(firing rate: spikes per neuron per step, synaptic accumulates) since count_spikes(True)."""
        stats = self.spike_statistics_by_module().values()
        spikes, steps = sum(s["spikes"] for s in stats), sum(s["neuron_steps"] for s in stats)
        return (spikes / steps if steps else 0.0), sum(s["accumulates"] for s in stats)

    # ------------------------------------------------------------------ in a distillation run
    def prepare(self, calibration: list[Mapping[str, Tensor]], first_batch: Mapping[str, Tensor]) -> None:
        """Before training: alpha_t = 2 mean|u_t| of the first training batch (the same on every rank)."""
        with torch.no_grad():
            self(**{k: first_batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")})

    def spiking_run(
        self, batch: Mapping[str, Tensor], time_steps: int, rate_estimate: bool = False
    ) -> tuple[Tensor, float, float, None]:
        """Its logits at its own T, the energy of its spikes and of what stays dense (pJ, summed); no
        rate estimate (a SpikeLM student is not trained under an energy budget)."""
        self.count_spikes(True)
        logits = self(**batch).logits
        accumulates = self.spike_statistics()[1]
        self.count_spikes(False)
        lengths = batch["attention_mask"].sum(1).tolist()
        spikes = ACCUMULATE_PJ * accumulates
        return logits, spikes, spikelm_energy_pj(self.config, accumulates, lengths, self.config.time_steps) - spikes, None

    # ------------------------------------------------------------------ construction and persistence
    @classmethod
    def from_teacher(
        cls,
        teacher_model: nn.Module,
        num_hidden_layers: int | None = None,
        widths: Mapping[str, int | None] | None = None,
        **fields: Any,
    ) -> SpikeLMForSequenceClassification:
        """The same initialisation as the eqspike student: every k-th teacher layer, embeddings and head."""
        student = cls(SpikeLMConfig(**teacher_shape(teacher_model.config, num_hidden_layers, **(widths or {})), **fields))
        copy_teacher_weights(
            student,
            teacher_model,
            {
                "query": lambda b: b.query.linear,
                "key": lambda b: b.key.linear,
                "value": lambda b: b.value.linear,
                "attention_output": lambda b: b.attention_output.linear,
                "attention_norm": lambda b: b.attention_norm,
                "intermediate": lambda b: b.intermediate.linear,
                "output": lambda b: b.output.linear,
                "output_norm": lambda b: b.output_norm,
            },
        )
        return student
