"""The spiking BERT student's configuration: its shape (from the teacher), its neurons, the deployment
T and how its equilibrium is found (one EquilibriumConfig). Students saved by eqspike 0.1 convert
on load (``from_dict``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eqspike.core.equilibrium import (
    EquilibriumConfig,
)
from eqspike.core.neurons import ROUNDINGS, NeuronConfig
from eqspike.core.quantization import parse_weight_bits
from eqspike.errors import (
    check_choice,
    check_in_interval,
    check_int_at_least,
    check_positive,
)
from eqspike.students.common import (
    PROBLEM_TYPES,
    EncoderShape,
)

MODEL_TYPE = "eqspike-spiking-bert"


@dataclass
class SpikingBertConfig(EncoderShape):
    """Shape of the student, its neurons and how its equilibrium is found."""

    time_steps: int = 8
    signed: bool = True
    rounding: str = "round"  # the neuron: 'round' (fires at +-theta/2) or 'trunc' (at +-theta; students saved before 0.2)
    hysteresis: float = 0.0  # a reversal (+1 after -1, or -1 after +1) needs the membrane past (1/2 + h) theta
    quantize_rates: bool = False  # 'solve' applies the T-step quantizer Q_T at time_steps (trained for T) instead of clamp
    feedback: bool = False
    # how the equilibrium is found and differentiated; its time_steps is always the student's
    equilibrium: EquilibriumConfig = field(default_factory=lambda: EquilibriumConfig(track_residual=False))
    weight_bits: float = 32
    threshold_quantile: float = 0.999

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size", "num_labels", "time_steps"):
            check_int_at_least(name, getattr(self, name), 1)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not a multiple of num_attention_heads={self.num_attention_heads}"
            )
        check_choice("problem_type", self.problem_type, PROBLEM_TYPES)
        check_choice("rounding", self.rounding, ROUNDINGS)
        NeuronConfig(signed=self.signed, rounding=self.rounding, hysteresis=self.hysteresis)  # validates them together
        if isinstance(self.equilibrium, Mapping):
            self.equilibrium = EquilibriumConfig(**self.equilibrium)
        self.equilibrium = dataclasses.replace(self.equilibrium, time_steps=self.time_steps)
        check_positive("layer_norm_eps", self.layer_norm_eps)
        check_in_interval("threshold_quantile", self.threshold_quantile, 0.0, 1.0)
        self.weight_bits = parse_weight_bits(self.weight_bits)
        self.id2label = {str(k): str(v) for k, v in self.id2label.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": MODEL_TYPE, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpikingBertConfig:
        data = dict(data)
        model_type = data.pop("model_type", None)
        if model_type != MODEL_TYPE:
            raise ValueError(f"model_type={model_type!r} is not an eqspike student (expected {MODEL_TYPE!r})")
        data.setdefault("rounding", "trunc")  # students saved before the rounding neuron keep their neuron
        legacy = {key: data.pop(old) for old, key in LEGACY_EQUILIBRIUM_KEYS.items() if old in data}
        if legacy:  # saved before the equilibrium settings were one EquilibriumConfig
            data["equilibrium"] = {"track_residual": False, **legacy, **dict(data.get("equilibrium") or {})}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown student config keys: {unknown}")
        return cls(**data)


# the flat keys of students saved before 0.2 -> fields of their EquilibriumConfig
LEGACY_EQUILIBRIUM_KEYS = {"forward_mode": "forward", "solver": "solver", "max_iter": "max_iter", "tol": "tol",
                           "backward_solver": "backward_solver", "backward_max_iter": "backward_max_iter",
                           "backward_tol": "backward_tol"}
