"""The spiking BERT student's configuration: its shape (from the teacher), its neurons, the deployment
T and how its equilibrium is found (one EquilibriumConfig), as a transformers config. Students saved by
eqspike 0.1 convert on load (``convert_legacy``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from eqspike.core.equilibrium import (
    EquilibriumConfig,
)
from eqspike.core.neurons import ROUNDINGS, NeuronConfig
from eqspike.core.quantization import parse_weight_bits
from eqspike.errors import check_choice, check_in_interval, check_int_at_least
from eqspike.students.common import StudentConfig

MODEL_TYPE = "eqspike-spiking-bert"
# where the thresholds of a student trained for T start (SpikingBertForSequenceClassification.prepare)
THRESHOLD_INITS = ("quantizer", "quantile")
# the kinds of population: the embeddings' and, in every block, these six
POPULATION_KINDS = ("embeddings", "key", "value", "context", "attention_output", "intermediate", "output")


def parse_spike_levels(levels: str | Mapping[str, int] | None) -> dict[str, int]:
    """'intermediate=2,output=4' (or a mapping) -> {'intermediate': 2, 'output': 4}: the most spikes a
    neuron of each kind fires in one step (burst spikes; kinds not named fire at most one)."""
    if levels is None or levels == "":
        return {}
    if isinstance(levels, str):
        pairs = {}
        for item in levels.split(","):
            kind, sep, value = item.partition("=")
            if not sep:
                raise ValueError(
                    f"spike_levels={levels!r} is not valid; write KIND=LEVELS,... (kinds: {', '.join(POPULATION_KINDS)})"
                )
            pairs[kind.strip()] = value.strip()
        levels = pairs
    parsed = {}
    for kind, value in dict(levels).items():
        check_choice("spike_levels kind", kind, POPULATION_KINDS)
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = None
        if number is None or str(value).strip() != str(number) or number < 1:
            raise ValueError(f"spike_levels: {kind}={value!r} is not valid; the levels must be an integer >= 1")
        if number > 1:
            parsed[kind] = number
    return parsed


class SpikingBertConfig(StudentConfig):
    """Shape of the student, its neurons, the deployment T and how its equilibrium is found."""

    model_type = MODEL_TYPE

    time_steps: int = 8
    signed: bool = True
    rounding: str = "round"  # the neuron: 'round' (fires at +-theta/2) or 'trunc' (at +-theta; students saved before 0.2)
    hysteresis: float = 0.0  # a reversal (+1 after -1, or -1 after +1) needs the membrane past (1/2 + h) theta
    quantize_rates: bool = False  # 'solve' applies the T-step quantizer Q_T at time_steps (trained for T) instead of clamp
    feedback: bool = False
    # how the equilibrium is found and differentiated (forward 'solve' or 'simulate', solvers, tolerances);
    # its time_steps is always the student's
    equilibrium: EquilibriumConfig | dict[str, Any] | None = None
    weight_bits: float = 32
    threshold_quantile: float = 0.999
    threshold_init: str = "quantizer"  # trained for T: start from Q_T's least-squares threshold, or the quantile
    # population kind -> the most spikes a neuron fires in one step (burst spikes of theta / B; others: 1)
    spike_levels: dict[str, int] | None = None

    def validate(self) -> None:
        super().validate()
        check_int_at_least("time_steps", self.time_steps, 1)
        check_choice("rounding", self.rounding, ROUNDINGS)
        NeuronConfig(signed=self.signed, rounding=self.rounding, hysteresis=self.hysteresis)  # validates them together
        if self.equilibrium is None:
            self.equilibrium = EquilibriumConfig(track_residual=False)
        elif isinstance(self.equilibrium, Mapping):
            self.equilibrium = EquilibriumConfig(**{"track_residual": False, **self.equilibrium})
        self.equilibrium = dataclasses.replace(self.equilibrium, time_steps=self.time_steps)
        check_in_interval("threshold_quantile", self.threshold_quantile, 0.0, 1.0)
        check_choice("threshold_init", self.threshold_init, THRESHOLD_INITS)
        self.weight_bits = parse_weight_bits(self.weight_bits)
        self.spike_levels = parse_spike_levels(self.spike_levels) or None

    def levels(self, population: str) -> int:
        """B of a population ('block1.intermediate' or a kind): the most spikes its neurons fire a step."""
        return (self.spike_levels or {}).get(population.rsplit(".", 1)[-1], 1)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        if isinstance(self.equilibrium, EquilibriumConfig):
            data["equilibrium"] = dataclasses.asdict(self.equilibrium)
        return data

    @classmethod
    def convert_legacy(cls, data: dict[str, Any]) -> dict[str, Any]:
        data = super().convert_legacy(data)
        data.setdefault("rounding", "trunc")  # students saved before the rounding neuron keep their neuron
        legacy = {key: data.pop(old) for old, key in LEGACY_EQUILIBRIUM_KEYS.items() if old in data}
        if legacy:  # saved before the equilibrium settings were one EquilibriumConfig
            data["equilibrium"] = {**legacy, **dict(data.get("equilibrium") or {})}
        return data


# the flat keys of students saved by 0.1 -> fields of their EquilibriumConfig
LEGACY_EQUILIBRIUM_KEYS = {
    "forward_mode": "forward",
    "solver": "solver",
    "max_iter": "max_iter",
    "tol": "tol",
    "backward_solver": "backward_solver",
    "backward_max_iter": "backward_max_iter",
    "backward_tol": "backward_tol",
}
