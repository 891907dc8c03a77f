"""eqspike: spiking BERT students by equilibrium-based ANN-to-SNN distillation.

The package, from the bottom up (docs/design.md explains the design):

- ``eqspike.core``: integrate-and-fire populations (``neurons``, ``if_population``) whose average spike
  rates reach the fixed point of a rate map, found by simulation or a solver and differentiated
  implicitly (``equilibrium``); 1- and 1.58-bit weights (``quantization``); numerical checks (``checks``).
- ``eqspike.students``: the spiking BERT student, the SpikeLM baseline and the dense student, the
  encoder families, and each student's op counts.
- ``eqspike.data``: tasks, batches, metrics and evaluation.
- ``eqspike.teacher``: the teacher store, the teacher's targets and their cache (from a ``TeacherSpec``).
- ``eqspike.distill``: a run's settings (``config``: flags, YAML), losses, the run directory and the trainer.
- ``eqspike.analysis``: convergence diagnostics, energy, benchmarking helpers.
- ``eqspike.runtime``: devices, torchrun, the Hub, files written safely, progress and optimisers.
- ``eqspike.app``, at the top: the command line (``cli``), ``compare`` and ``prediction``.
"""

from eqspike.core.equilibrium import (
    EquilibriumConfig,
    EquilibriumLayer,
    EquilibriumOutput,
    EquilibriumStats,
)
from eqspike.core.if_population import IFPopulation, simulate_constant_current
from eqspike.core.neurons import (  # noqa: E402
    NeuronConfig,
    equilibrium_rate,
)
from eqspike.core.rate_map import Population, RateMap
from eqspike.core.simulation import simulate
from eqspike.students import (  # registers both students with transformers' AutoConfig and Auto models
    SpikeLMForSequenceClassification,
    SpikingBertConfig,
    SpikingBertForSequenceClassification,
    load_student,
)
from eqspike.version import __version__

__all__ = [
    "__version__",
    "EquilibriumConfig",
    "EquilibriumLayer",
    "EquilibriumOutput",
    "EquilibriumStats",
    "IFPopulation",
    "NeuronConfig",
    "Population",
    "RateMap",
    "SpikeLMForSequenceClassification",
    "SpikingBertConfig",
    "SpikingBertForSequenceClassification",
    "equilibrium_rate",
    "load_student",
    "simulate",
    "simulate_constant_current",
]
