"""Energy under two conventions, from inventories of operations and bits moved (docs/design.md §7):
`compute`, the arithmetic of the papers' convention (``eqspike.students.energy``, exactly, with every
format at FP32), and `compute_memory`, which adds the membrane arithmetic and the memory traffic,
priced by a ``Hardware`` profile. The baselines (teacher, dense student, QNN) are inventories too, so
that every ratio compares like with like.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from eqspike.students.energy import (
    ACCUMULATE_PJ,
    GELU_OPS_PER_ELEMENT,
    LAYERNORM_OPS_PER_ELEMENT,
    MAC_PJ,
    SCALE_OPS_PER_SCORE,
    SOFTMAX_OPS_PER_SCORE,
    StudentEnergy,
    spikelm_macs,
    student_macs,
)

# ---------------------------------------------------------------------------- two conventions
# `compute`: arithmetic only, the papers' convention (SpikingBERT, SpikeLM, Sorbet): synaptic
#     accumulates and the multiply-accumulates that remain; with every format at FP32 it is the
#     number above (`StudentEnergy`), exactly.
# `compute_memory`: also the membrane arithmetic (one add and one compare per neuron and step, one
#     subtract per spike) and the memory traffic, in bits, priced per bit read or written: weights,
#     spikes (or activations) moved, membrane state read and written every step. See `Hardware`.
CONVENTIONS = ("compute", "compute_memory")
ACCESS_MODELS = ("per_spike", "weight_stationary")


@dataclass(frozen=True)
class Hardware:
    """Energy per operation (pJ, by number format) and per bit moved; the default is Horowitz's 45 nm
    table (ISSCC 2014): adds 0.03 (8-bit integer), 0.05 (16), 0.1 (32), 0.4 (FP16), 0.9 (FP32); a
    multiply-accumulate, his multiply plus add, 0.23 (8-bit integer: 0.2 + 0.03), 3.2 (32-bit integer),
    1.5 (FP16), 4.6 (FP32: 3.7 + 0.9); a 64-bit read of an 8 KB / 32 KB / 1 MB SRAM
    10 / 20 / 100 pJ, of DRAM 1.3-2.6 nJ. Weights, spikes and state are read from on-chip SRAM banks of
    ``memory_kb`` (32 KB by default: 20 pJ per 64 bits, writes priced as reads). A profile is replaced by
    a YAML file of the same fields (``--hardware``)."""

    name: str = "horowitz45"
    add_pj: Mapping[str, float] = field(
        default_factory=lambda: {"int8": 0.03, "int16": 0.05, "int32": 0.1, "fp16": 0.4, "fp32": ACCUMULATE_PJ}
    )
    mac_pj: Mapping[str, float] = field(default_factory=lambda: {"int8": 0.23, "int32": 3.2, "fp16": 1.5, "fp32": MAC_PJ})
    memory_kb: float = 32.0
    memory_pj_per_64_bits: Mapping[float, float] = field(default_factory=lambda: {8.0: 10.0, 32.0: 20.0, 1024.0: 100.0})
    source: str = "M. Horowitz, Computing's energy problem (and what we can do about it), ISSCC 2014, 45 nm"

    def __post_init__(self) -> None:
        if self.memory_kb not in self.memory_pj_per_64_bits:
            raise ValueError(
                f"hardware {self.name!r}: memory_kb={self.memory_kb} has no read energy; "
                f"choose one of {sorted(self.memory_pj_per_64_bits)}"
            )

    @property
    def bit_pj(self) -> float:
        """Energy per bit read or written."""
        return self.memory_pj_per_64_bits[self.memory_kb] / 64

    def add(self, fmt: str) -> float:
        return self._price(self.add_pj, fmt, "add")

    def mac(self, fmt: str) -> float:
        return self._price(self.mac_pj, fmt, "multiply-accumulate")

    def _price(self, table: Mapping[str, float], fmt: str, op: str) -> float:
        if fmt not in table:
            raise ValueError(f"hardware {self.name!r} has no {op} energy for {fmt!r}; it has {sorted(table)}")
        return table[fmt]

    @classmethod
    def from_yaml(cls, path) -> Hardware:
        import yaml

        values = yaml.safe_load(open(path)) or {}
        unknown = sorted(set(values) - {f for f in cls.__dataclass_fields__})
        if unknown:
            raise ValueError(f"{path}: unknown hardware fields {unknown}; the fields are {sorted(cls.__dataclass_fields__)}")
        if "memory_pj_per_64_bits" in values:
            values["memory_pj_per_64_bits"] = {float(k): float(v) for k, v in values["memory_pj_per_64_bits"].items()}
        return cls(**values)


@dataclass(frozen=True)
class Op:
    """One line of an energy inventory, per example: ``count`` operations of ``kind`` ("mac", "add")
    in number format ``fmt``, or ``count`` bits moved (``kind`` "memory"), for ``part`` of the network."""

    part: str
    kind: str
    count: float
    fmt: str = "fp32"
    convention: str = "compute"  # the first convention that counts it (compute_memory counts everything)
    per_spike: bool = False  # grows in proportion to the spikes fired

    def pj(self, hardware: Hardware) -> float:
        if self.kind == "memory":
            return self.count * hardware.bit_pj
        return self.count * (hardware.mac(self.fmt) if self.kind == "mac" else hardware.add(self.fmt))


def price(ops: Sequence[Op], hardware: Hardware, convention: str) -> float:
    """Energy (pJ) of an inventory under a convention: ``compute`` prices the arithmetic of the papers'
    convention, ``compute_memory`` every line."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention {convention!r} is not one of {CONVENTIONS}")
    return sum(op.pj(hardware) for op in ops if convention == "compute_memory" or op.convention == "compute")


def state_format(weight_bits: float) -> str:
    """The membrane's number format: FP32 with full-precision weights; with 1.58- or 1-bit weights a
    16-bit integer (the weight's scale folded into the threshold; fan-in x T x levels of +-1 fits)."""
    return "fp32" if weight_bits >= 16 else "int16"


def _format_bits(fmt: str) -> int:
    return int(fmt.removeprefix("fp").removeprefix("int"))


def _special_ops(heads: int, hidden: int, intermediate: int, length: float) -> float:
    """Per block and pass: score scaling and softmax, two LayerNorms, GELU (counted as multiply-accumulates)."""
    return (
        heads * length * length * (SCALE_OPS_PER_SCORE + SOFTMAX_OPS_PER_SCORE)
        + 2 * length * hidden * LAYERNORM_OPS_PER_ELEMENT
        + length * intermediate * GELU_OPS_PER_ELEMENT
    )


def block_weights(hidden: int, intermediate: int) -> int:
    """Weights of one encoder block's projections: Q, K, V, O (4 H^2) and the FFN (2 H I)."""
    return 4 * hidden * hidden + 2 * hidden * intermediate


def _mean(lengths: Sequence[float], f) -> float:
    return sum(f(float(n)) for n in lengths) / max(len(lengths), 1)


def dense_inventory(
    shape: StudentEnergy,
    layers: int,
    lengths: Sequence[float],
    weight_bits: float = 32,
    activation_bits: int = 32,
    mac_fmt: str = "fp32",
    matmul_adds: float | None = None,
) -> list[Op]:
    """A dense BERT of ``shape``'s width and ``layers`` blocks (+ pooler and classifier), per example,
    averaged over examples of ``lengths`` tokens, batch 1. Arithmetic: the projections and Q K^T, P V as
    multiply-accumulates in ``mac_fmt`` (or, for a quantized network whose activations take few levels,
    ``matmul_adds`` shift-adds each), the rest (softmax, LayerNorm, GELU, embeddings, head) at FP32 as
    for every network here. Memory (weight-stationary): every weight read once; every activation of a
    block written once and read once, at ``activation_bits``; the embedding rows read at 32 bits.
    With every format at FP32 its ``compute`` price is ``bert_macs`` x 4.6 pJ."""
    H, I, h = shape.hidden, shape.intermediate, shape.heads
    matmul = _mean(lengths, lambda L: layers * (L * block_weights(H, I) + 2 * L * L * H))
    network = dataclasses.replace(shape, layers=layers)
    extras = (
        [Op("embedding projection, position bias", "mac", _mean(lengths, lambda L: network.family_macs(L, 1)))]
        if shape.embedding_size or shape.relative_bias
        else []
    )
    ops = [
        Op("matmuls", "mac", matmul, mac_fmt) if matmul_adds is None else Op("matmuls", "add", matmul * matmul_adds, mac_fmt),
        Op("softmax, LayerNorm, GELU", "mac", _mean(lengths, lambda L: layers * _special_ops(h, H, I, L))),
        Op("embeddings and head", "mac", _mean(lengths, lambda L: L * H * LAYERNORM_OPS_PER_ELEMENT) + H * H + H * shape.labels),
        Op(
            "weights read",
            "memory",
            (layers * block_weights(H, I) + H * H + H * shape.labels) * weight_bits,
            convention="compute_memory",
        ),
        Op(
            "activations moved",
            "memory",
            _mean(lengths, lambda L: 2 * activation_bits * layers * (8 * L * H + 2 * L * I + 2 * h * L * L)),
            convention="compute_memory",
        ),
        Op("embedding rows read", "memory", _mean(lengths, lambda L: 3 * L * H * 32), convention="compute_memory"),
    ]
    return extras + ops


def spiking_inventory(
    shape: StudentEnergy,
    lengths: Sequence[float],
    time_steps: int,
    spikes: Mapping[str, float],
    accumulates: Mapping[str, float],
    neurons: Mapping[str, float],
    spike_bits: Mapping[str, int],
    weight_bits: float = 32,
    access: str = "per_spike",
) -> list[Op]:
    """The spiking student at T = ``time_steps``, per example, from what it fired on examples of ``lengths``
    tokens: per population the totals over those examples of ``spikes`` (unit spikes), ``accumulates``
    (spikes x fan-out) and ``neurons`` (tokens x width), and ``spike_bits`` (per neuron and step: 1
    unsigned, 2 signed, more for bursts). Arithmetic (``compute``): the accumulates in the membrane's
    format, the multiply-accumulates that remain (``student_macs``). Also counted (``compute_memory``):
    the membrane's add and compare per neuron and step and subtract per spike; per neuron and step the
    spike written and read and the membrane read and written; the synaptic weights read per spike
    (``per_spike``) or once (``weight_stationary``); the key and value spikes' operands (queries,
    probabilities) read per event at 32 bits under both; the remaining dense parts' values written and
    read at 32 bits every step; the head's weights and the embedding rows."""
    if access not in ACCESS_MODELS:
        raise ValueError(f"access model {access!r} is not one of {ACCESS_MODELS}")
    H, I, h, M, T = shape.hidden, shape.intermediate, shape.heads, shape.layers, time_steps
    examples = max(len(lengths), 1)
    state = state_format(weight_bits)
    per = {name: count / examples for name, count in accumulates.items()}
    cells = sum(neurons.values()) / examples
    weights_read, operands_read, head_read = _synaptic_traffic(shape, lengths, per, weight_bits, access)
    ops = [Op(f"{name} accumulates", "add", count, state, per_spike=True) for name, count in per.items()]
    ops += [
        Op(
            "multiply-accumulates that remain",
            "mac",
            _mean(lengths, lambda L: student_macs(H, I, h, M, shape.labels, L, T) + shape.family_macs(L, T)),
        ),
        Op("membrane add and compare", "add", 2 * T * cells, state, "compute_memory"),
        Op("membrane subtract per spike", "add", sum(spikes.values()) / examples, state, "compute_memory", per_spike=True),
        Op(
            "spikes written and read",
            "memory",
            2 * T * sum(neurons[n] * spike_bits[n] for n in neurons) / examples,
            convention="compute_memory",
        ),
        Op("membrane state read and written", "memory", 2 * T * cells * _format_bits(state), convention="compute_memory"),
        weights_read,
        operands_read,
        Op(
            "dense parts' values moved",
            "memory",
            _mean(lengths, lambda L: 2 * 32 * T * M * (2 * h * L * L + 2 * L * H + L * I + L * (3 * H + I))),
            convention="compute_memory",
        ),
        head_read,
    ]
    return ops


def _synaptic_traffic(
    shape: StudentEnergy, lengths: Sequence[float], accumulates: Mapping[str, float], weight_bits: float, access: str
) -> list[Op]:
    """What a spiking network reads per example (``compute_memory``), from its accumulates per population:
    the synaptic weights at every spike's target (``per_spike``) or once (``weight_stationary``); the
    key and value spikes' operands (queries, probabilities) per event at 32 bits under both; the head's
    weights and the embedding rows."""
    H = shape.hidden
    static = sum(v for n, v in accumulates.items() if not n.endswith((".key", ".value")))
    dynamic = sum(v for n, v in accumulates.items() if n.endswith((".key", ".value")))
    weights = static if access == "per_spike" else shape.layers * block_weights(H, shape.intermediate)
    return [
        Op(
            "synaptic weights read", "memory", weights * weight_bits, convention="compute_memory", per_spike=access == "per_spike"
        ),
        Op("key/value operands read", "memory", dynamic * 32, convention="compute_memory", per_spike=True),
        Op(
            "head weights read, embedding rows",
            "memory",
            (H * H + H * shape.labels) * 32 + _mean(lengths, lambda L: 3 * L * H * 32),
            convention="compute_memory",
        ),
    ]


def spikelm_inventory(
    shape: StudentEnergy,
    lengths: Sequence[float],
    time_steps: int,
    spikes: Mapping[str, float],
    accumulates: Mapping[str, float],
    neuron_steps: Mapping[str, float],
    access: str = "per_spike",
) -> list[Op]:
    """The SpikeLM baseline at its T, per example, from what its spiking modules fired on examples of
    ``lengths`` tokens (totals over them: ``spikes``, ``accumulates``, ``neuron_steps``). Arithmetic
    (``compute``): the accumulates at FP32 and the multiply-accumulates that remain, its multiplicative
    membrane update included (``spikelm_macs``). Also counted (``compute_memory``): one compare per
    neuron and step (the ternary spike's decision); per neuron and step a 2-bit spike written and read
    and a 32-bit membrane read and written; the weights read per spike or once, the key and value
    operands per event, and the dense values (scores, LayerNorm, GELU) each step, as for eqspike's student."""
    if access not in ACCESS_MODELS:
        raise ValueError(f"access model {access!r} is not one of {ACCESS_MODELS}")
    H, I, h, M, T = shape.hidden, shape.intermediate, shape.heads, shape.layers, time_steps
    examples = max(len(lengths), 1)
    per = {name: count / examples for name, count in accumulates.items()}
    cells = sum(neuron_steps.values()) / examples  # neurons x steps
    weights_read, operands_read, head_read = _synaptic_traffic(shape, lengths, per, 32, access)
    ops = [Op(f"{name} accumulates", "add", count, "fp32", per_spike=True) for name, count in per.items()]
    ops += [
        Op(
            "multiply-accumulates that remain",
            "mac",
            _mean(lengths, lambda L: spikelm_macs(H, I, h, M, shape.labels, L, T) + shape.family_macs(L, T)),
        ),
        Op("spike decision (compare)", "add", cells, "fp32", "compute_memory"),
        Op("spikes written and read", "memory", 2 * 2 * cells, convention="compute_memory"),
        Op("membrane state read and written", "memory", 2 * 32 * cells, convention="compute_memory"),
        weights_read,
        operands_read,
        Op(
            "dense parts' values moved",
            "memory",
            _mean(lengths, lambda L: 2 * 32 * T * M * (2 * h * L * L + 2 * L * H + L * I)),
            convention="compute_memory",
        ),
        head_read,
    ]
    return ops


def break_even_firing_rate(
    ops: Sequence[Op], firing_rate: float, baseline_pj: float, hardware: Hardware, convention: str
) -> float | None:
    """The average firing rate (spikes per neuron and step) at which the student's energy equals
    ``baseline_pj``, its spikes scaled at their measured distribution over populations:
    E(r) = E_fixed + (r / r_measured) E_spikes, so r* = r_measured (E_baseline - E_fixed) / E_spikes.
    None when even a silent student (r = 0) costs more than the baseline."""
    spikes = price([op for op in ops if op.per_spike], hardware, convention)
    fixed = price([op for op in ops if not op.per_spike], hardware, convention)
    if baseline_pj <= fixed:
        return None
    if spikes <= 0 or firing_rate <= 0:
        return float("inf")
    return firing_rate * (baseline_pj - fixed) / spikes
