"""One block of the spiking BERT student: its weights, the thresholds of its six populations and their
currents as functions of upstream rates (the equations: ``eqspike.students.spiking_bert``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from transformers.activations import ACT2FN

from eqspike.core.quantization import QuantLinear
from eqspike.core.rate_map import Population
from eqspike.students.attention import attention_scores, merge_heads, split_heads
from eqspike.students.spiking_bert_config import POPULATION_KINDS, SpikingBertConfig

BLOCK_POPULATIONS = POPULATION_KINDS[1:]  # ("key", "value", "context", "attention_output", "intermediate", "output")


class SpikingBertBlock(nn.Module):
    """The weights of one encoder block and the thresholds of its six populations."""

    def __init__(self, config: SpikingBertConfig) -> None:
        super().__init__()
        h, i, bits = config.hidden_size, config.intermediate_size, config.weight_bits
        self.heads = config.num_attention_heads
        self.query = QuantLinear(h, h, weight_bits=bits)
        self.key = QuantLinear(h, h, weight_bits=bits)
        self.value = QuantLinear(h, h, weight_bits=bits)
        self.attention_output = QuantLinear(h, h, weight_bits=bits)
        self.attention_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.intermediate = QuantLinear(h, i, weight_bits=bits)
        self.output = QuantLinear(i, h, weight_bits=bits)
        self.output_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.activation = ACT2FN[config.hidden_act]
        for name in BLOCK_POPULATIONS:  # trained only for a deployment T (``train_thresholds``)
            setattr(self, f"threshold_{name}", nn.Parameter(torch.ones(i if name == "intermediate" else h), requires_grad=False))

    def threshold(self, population: str) -> Tensor:
        return getattr(self, f"threshold_{population}")

    def scores(self, v_in: Tensor, v_key: Tensor, position_bias: Tensor | float = 0.0) -> Tensor:
        """Q K^T / sqrt(d) + the family's position bias, per head, Q = W_Q v_in + b_Q (real-valued; K a
        spiking population's value)."""
        return attention_scores(self.query(v_in), v_key, self.heads) + position_bias

    def populations(
        self,
        prefix: str,
        source: str,
        value: Callable[[str, Tensor], Tensor],
        theta: dict[str, Tensor],
        key_mask: Tensor,
        position_bias: Tensor | float = 0.0,
    ) -> list[Population]:
        """The block's six populations (names ``prefix + part``) reading the input population ``source``;
        each current is divided by its population's thresholds ``theta`` (rates are currents / theta),
        and ``value(name, rate)`` decodes an upstream population (v = theta a). See the module docstring."""
        n = lambda part: prefix + part  # noqa: E731

        def context(a_in: Tensor, a_key: Tensor, a_value: Tensor) -> Tensor:
            scores = self.scores(value(source, a_in), value(n("key"), a_key), position_bias) + key_mask
            mixed = torch.softmax(scores, dim=-1) @ split_heads(value(n("value"), a_value), self.heads)
            return merge_heads(mixed) / theta[n("context")]

        return [
            Population(n("key"), (source,), lambda a: self.key(value(source, a)) / theta[n("key")]),
            Population(n("value"), (source,), lambda a: self.value(value(source, a)) / theta[n("value")]),
            Population(n("context"), (source, n("key"), n("value")), context),
            Population(
                n("attention_output"),
                (n("context"), source),
                lambda a_ctx, a_in: (
                    self.attention_norm(self.attention_output(value(n("context"), a_ctx)) + value(source, a_in))
                    / theta[n("attention_output")]
                ),
            ),
            Population(
                n("intermediate"),
                (n("attention_output"),),
                lambda a: self.activation(self.intermediate(value(n("attention_output"), a))) / theta[n("intermediate")],
            ),
            Population(
                n("output"),
                (n("intermediate"), n("attention_output")),
                lambda a_int, a_att: (
                    self.output_norm(self.output(value(n("intermediate"), a_int)) + value(n("attention_output"), a_att))
                    / theta[n("output")]
                ),
            ),
        ]
