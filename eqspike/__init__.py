"""eqspike: spiking BERT students by equilibrium-based ANN-to-SNN distillation.

The core: integrate-and-fire populations (``eqspike.neurons``) whose average spike rates reach the
fixed point of a rate map, found by simulation or a solver and differentiated implicitly
(``eqspike.equilibrium``).
"""

__version__ = "0.1.0"

from eqspike.equilibrium import (  # noqa: E402
    EquilibriumConfig,
    EquilibriumLayer,
    EquilibriumOutput,
    EquilibriumStats,
    Population,
    RateMap,
    simulate,
)
from eqspike.neurons import IFPopulation, NeuronConfig, equilibrium_rate, simulate_constant_current  # noqa: E402

__all__ = [
    "EquilibriumConfig",
    "EquilibriumLayer",
    "EquilibriumOutput",
    "EquilibriumStats",
    "IFPopulation",
    "NeuronConfig",
    "Population",
    "RateMap",
    "equilibrium_rate",
    "simulate",
    "simulate_constant_current",
]
