"""The spiking BERT student (docs/design.md §4).

Every tensor that crosses a block boundary is carried by a population of signed IF neurons. A
population has one threshold per neuron, theta, and its spikes have amplitude theta: its decoded
value is v = theta * a, where a is the average spike rate. At equilibrium

    a = clamp(F(v_upstream) / theta, -1, 1),   i.e.  v = clamp(F(v_upstream), -theta, theta),

so v is the ANN activation F clipped at +-theta. The thresholds are calibrated from the network's own
activations (threshold balancing, ``calibrate_thresholds``) so that little is clipped.

Populations per block, with v_in the block's input population:

    key       = W_K v_in + b_K                         (spiking K)
    value     = W_V v_in + b_V                         (spiking V)
    context   = softmax((W_Q v_in + b_Q) v_key^T / sqrt(d) + mask) v_value
                                                       (Q real-valued; QK^T and PV accumulate over spikes)
    attention_output = LayerNorm(W_O v_context + b_O + v_in)
    intermediate     = GELU(W_1 v_attention_output + b_1)
    output           = LayerNorm(W_2 v_intermediate + b_2 + v_attention_output)

The embeddings (word + position + type, LayerNorm) drive the first population with a constant current
(plus W_fb v_output of the last block with the optional feedback edge). The classifier reads the [CLS]
value of the last block through BERT's pooler. Non-spiking operations act on rate-domain values, and
the simulation drives each population with the increment of its cumulative ideal current, so the
spiking network converges to this map as T grows (``eqspike.core.equilibrium``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from transformers import initialization as init

from eqspike.core.equilibrium import (
    EquilibriumLayer,
)
from eqspike.core.neurons import NeuronConfig
from eqspike.core.quantization import QuantLinear
from eqspike.core.rate_map import Population, RateMap
from eqspike.students.attention import default_masks, key_padding_mask
from eqspike.students.calibration import calibrate
from eqspike.students.common import SpikingBertEmbeddings, StudentOutput, StudentPreTrainedModel, relative_attention_bias
from eqspike.students.energy import StudentEnergy
from eqspike.students.initialization import copy_teacher_weights, teacher_projections, teacher_shape
from eqspike.students.spiking_bert_block import BLOCK_POPULATIONS, SpikingBertBlock
from eqspike.students.spiking_bert_config import SpikingBertConfig

THRESHOLD_FLOOR = 1e-3  # the smallest threshold a population uses


class SpikingBertForSequenceClassification(StudentPreTrainedModel):
    """The spiking BERT student with a sequence-classification (or regression) head; a transformers
    model (``AutoModelForSequenceClassification``, ``pipeline``, ``save_pretrained``)."""

    config_class = SpikingBertConfig
    kind = "eqspike"
    description = "An eqspike spiking BERT (equilibrium distillation, implicit gradients)"
    reports_energy = True
    kind_settings = ("spike_levels", "energy_budget")

    @classmethod
    def train_for(cls, settings: Any) -> str | None:
        return settings.train_for

    @classmethod
    def run_name(cls, settings: Any) -> str:
        bits = {32: "fp", 1: "1bit", 1.58: "1.58bit"}[settings.weight_bits]
        return f"T{settings.time_steps}-{bits}"

    def __init__(self, config: SpikingBertConfig) -> None:
        super().__init__(config)
        config.validate()  # from_pretrained sets overrides (time_steps, hysteresis, ...) after __post_init__
        self.embeddings = SpikingBertEmbeddings(config)
        self.threshold_embeddings = nn.Parameter(torch.ones(config.hidden_size), requires_grad=False)
        self.blocks = nn.ModuleList(SpikingBertBlock(config) for _ in range(config.num_hidden_layers))
        self.feedback = None
        if config.feedback:
            self.feedback = QuantLinear(config.hidden_size, config.hidden_size, bias=False, weight_bits=config.weight_bits)
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.relative_attention_bias = relative_attention_bias(config)
        self.embeddings_to_teacher, self.hidden_to_teacher = teacher_projections(config)
        self.equilibrium = EquilibriumLayer(config.equilibrium)
        self.neuron = NeuronConfig(threshold=1.0, signed=config.signed, rounding=config.rounding, hysteresis=config.hysteresis)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is self.feedback:  # the feedback edge starts at 0: the feed-forward network, trained from there
            init.zeros_(module.weight)

    # ------------------------------------------------------------------ the rate map
    @staticmethod
    def population_names(num_layers: int) -> list[str]:
        return ["embeddings"] + [f"block{m}.{p}" for m in range(num_layers) for p in BLOCK_POPULATIONS]

    def threshold(self, name: str) -> Tensor:
        if name == "embeddings":
            return self.threshold_embeddings
        block, population = name.split(".")
        return self.blocks[int(block[len("block") :])].threshold(population)

    def thresholds(self) -> dict[str, Tensor]:
        """Every population's thresholds, kept above THRESHOLD_FLOOR (a trained threshold may drift)."""
        return {
            name: self.threshold(name).clamp_min(THRESHOLD_FLOOR) for name in self.population_names(self.config.num_hidden_layers)
        }

    def train_thresholds(self, enabled: bool = True) -> None:
        """Make the thresholds trainable parameters (training for a deployment T) or constants."""
        for name in self.population_names(self.config.num_hidden_layers):
            self.threshold(name).requires_grad_(enabled)

    def rate_map(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor, time_steps: int | None = None
    ) -> RateMap:
        """Phi for one batch: every population's current as a function of its upstream rates.
        ``time_steps``: None for the exact equilibrium rates, T for the T-step quantizer Q_T."""
        cfg = self.config
        embedded = self.embeddings(input_ids, token_type_ids)
        key_mask = key_padding_mask(attention_mask, embedded.dtype)
        position_bias = self.position_bias(input_ids.shape[1], input_ids.device)
        last = f"block{cfg.num_hidden_layers - 1}.output"
        theta = self.thresholds()

        def value(name: str, rate: Tensor) -> Tensor:  # decoded value v = theta * a
            return theta[name] * rate

        populations: list[Population] = []
        if self.feedback is not None:
            populations.append(
                Population(
                    "embeddings",
                    (last,),
                    lambda a_last: (embedded + self.feedback(value(last, a_last))) / theta["embeddings"],
                )
            )
            initial_state = {last: torch.zeros_like(embedded)}
        else:
            populations.append(Population("embeddings", (), lambda: embedded / theta["embeddings"]))
            initial_state = None

        source = "embeddings"
        for m, block in enumerate(self.blocks):
            populations += block.populations(f"block{m}.", source, value, theta, key_mask, position_bias)
            source = f"block{m}.output"
        if cfg.spike_levels:
            populations = [dataclasses.replace(p, neuron=self.neuron_of(p.name)) for p in populations]
        return RateMap(populations, self.neuron, initial_state, time_steps)

    def neuron_of(self, population: str) -> NeuronConfig:
        """The neuron of a population: the student's, or with burst spikes of its kind's levels (no hysteresis)."""
        levels = self.config.levels(population)
        return self.neuron if levels == 1 else dataclasses.replace(self.neuron, levels=levels, hysteresis=0.0)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        mode: str | None = None,
        time_steps: int | None = None,
        output_attention_scores: bool = False,
        record_trajectory: bool = False,
        count_spikes: bool = False,
        labels: Tensor | None = None,
        return_dict: bool | None = None,
    ) -> StudentOutput:
        """Find the equilibrium and classify. ``mode`` (default: the config's ``equilibrium.forward``):
        'simulate' runs the spiking network for ``time_steps`` steps (default: the config's); 'solve'
        finds the fixed point of the rate map directly: with ``quantize_rates`` the T-step quantizer's
        (T = ``time_steps``, default the config's), which predicts the simulation at T, otherwise the
        exact (T = infinity) equilibrium. With ``labels``, ``loss`` is the task loss. ``return_dict``
        is accepted for transformers' callers; the output is always a ``StudentOutput``."""
        attention_mask, token_type_ids = default_masks(input_ids, attention_mask, token_type_ids)
        mode = mode or self.config.equilibrium.forward  # the config's, read at every call (it may be edited)
        # A student trained for T: the T-step quantized map (its fixed point for 'solve'; its gradient,
        # taken at the simulated rates, for 'simulate' under autograd)
        map_steps = (time_steps or self.config.time_steps) if self.config.quantize_rates else None
        rate_map = self.rate_map(input_ids, attention_mask, token_type_ids, map_steps)
        out = self.equilibrium(
            rate_map,
            mode=mode,
            time_steps=time_steps or self.config.time_steps,
            record_trajectory=record_trajectory,
            count_spikes=count_spikes,
        )
        rates = out.rates
        names = ["embeddings"] + [f"block{m}.output" for m in range(self.config.num_hidden_layers)]
        hidden_values = [self.population_values(name, rates[name]) for name in names]
        logits = self.head(hidden_values[-1])
        scores = None
        if output_attention_scores:
            scores, source = [], "embeddings"
            position_bias = self.position_bias(input_ids.shape[1], input_ids.device)
            for m, block in enumerate(self.blocks):
                v_in = self.population_values(source, rates[source])
                v_key = self.population_values(f"block{m}.key", rates[f"block{m}.key"])
                scores.append(block.scores(v_in, v_key, position_bias))
                source = f"block{m}.output"
        return StudentOutput(
            loss=self.task_loss(logits, labels),
            logits=logits,
            hidden_values=hidden_values,
            attention_scores=scores,
            rates=rates,
            stats=out.stats,
            spike_counts=out.spike_counts,
            trajectory=out.trajectory,
        )

    def population_values(self, name: str, rate: Tensor) -> Tensor:
        """Decoded value v = theta * a of a population's rates."""
        return self.threshold(name).clamp_min(THRESHOLD_FLOOR) * rate

    # ------------------------------------------------------------------ thresholds
    @torch.no_grad()
    def calibrate_thresholds(
        self,
        batches: Iterable[Mapping[str, Tensor]],
        quantile: float | None = None,
        floor: float = THRESHOLD_FLOOR,
        time_steps: int | None = None,
    ) -> None:
        """Threshold balancing from the network's own activations v over the non-pad tokens of
        ``batches``, measured with nothing clipped (the ANN-equivalent network):

          time_steps None: theta = the ``quantile`` of |v| per neuron (little is clipped);
          time_steps T:    theta = argmin_c sum (c Q_T(v / c) - v)^2 per neuron over candidates
                           c = q * 2^(-k/4), k = 0..15, q the quantile above: the threshold whose T-step
                           quantizer represents the neuron's activations best (clipping traded for
                           resolution; at small T the best threshold is well below the quantile).
        """
        quantile = self.config.threshold_quantile if quantile is None else quantile
        calibrate(self, batches, quantile, floor, time_steps)

    # ------------------------------------------------------------------ in a distillation run
    def prepare(self, calibration: list[Mapping[str, Tensor]], first_batch: Mapping[str, Tensor]) -> None:
        """Before training: thresholds calibrated on the ``calibration`` batches (when trained for T: for
        the T-step quantizer, or at the quantile with threshold_init 'quantile'; and then trained too)."""
        for_quantizer = self.config.quantize_rates and self.config.threshold_init == "quantizer"
        self.calibrate_thresholds(calibration, time_steps=self.config.time_steps if for_quantizer else None)
        self.train_thresholds(self.config.quantize_rates)

    def spiking_run(
        self, batch: Mapping[str, Tensor], time_steps: int, rate_estimate: bool = False
    ) -> tuple[Tensor, float, float, float | None]:
        """The network run for T steps on ``batch``: its logits, the energy of the spikes it fired (pJ,
        counted at their targets) and of what stays dense (pJ), summed over the batch; with
        ``rate_estimate``, also ``rate_spike_pj`` (from this run's rates when the student trains on its
        simulation: the same rates, not a second simulation)."""
        out = self(**batch, mode="simulate", time_steps=time_steps, count_spikes=True)
        energy, mask = StudentEnergy.of(self.config), batch["attention_mask"]
        dense = sum(energy.dense_pj(n, time_steps) for n in mask.sum(1).tolist())
        estimate = None
        if rate_estimate:
            estimate = self.rate_spike_pj(batch, time_steps, out.rates if self.config.equilibrium.forward == "simulate" else None)
        return out.logits, float(energy.accumulate_pj(out.spike_counts, mask).sum()), dense, estimate

    def rate_spike_pj(self, batch: Mapping[str, Tensor], time_steps: int, rates: Mapping[str, Tensor] | None = None) -> float:
        """The spikes' energy estimated from the rates the student trains on (the simulated ones, or the
        T-step quantized map's with train_forward 'solve'), T |a| spikes a neuron (pJ): the estimate an
        energy budget's penalty uses in training, so that their ratio to the spikes fired calibrates it
        (burst neurons: B T |a|).
        ``rates``: those rates when already at hand."""
        if rates is None:
            rates = self(**batch, mode=self.config.equilibrium.forward, time_steps=time_steps).rates
        counts = {name: rate.abs() * (time_steps * self.config.levels(name)) for name, rate in rates.items()}
        return float(StudentEnergy.of(self.config).accumulate_pj(counts, batch["attention_mask"]).sum())

    # ------------------------------------------------------------------ initialisation from a teacher
    @classmethod
    def from_teacher(
        cls,
        teacher_model: nn.Module,
        num_hidden_layers: int | None = None,
        widths: Mapping[str, int | None] | None = None,
        **config_fields: Any,
    ) -> SpikingBertForSequenceClassification:
        """A student with the teacher's shape (or narrower: ``widths``, ``teacher_shape``) whose block m
        copies teacher layer round((m+1) * L_T / M) (uniform map, DistilBERT-style), plus embeddings,
        pooler and head."""
        config = SpikingBertConfig(**teacher_shape(teacher_model.config, num_hidden_layers, **(widths or {})), **config_fields)
        student = cls(config)
        copy_teacher_weights(student, teacher_model)
        return student
