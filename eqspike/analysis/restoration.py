"""The networks of the attribution (``eqspike.analysis.attribution``): the spiking student with some of
its populations put back at their exact rates, clipped or without a threshold; its exact equilibria
(clipped at T = infinity, and the dense-equivalent network); and a dense student's activations at the
places of the spiking student's populations.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

from eqspike.core.simulation import simulate

_NO_THRESHOLD = 1e4  # a threshold so large that nothing is clipped: the dense-equivalent population


@contextmanager
def _thresholds_removed(student, names: Iterable[str]):
    """The named populations' thresholds set to _NO_THRESHOLD for the rate maps built inside (a map
    reads its thresholds when it is built), restored on exit."""
    saved = {name: student.threshold(name).detach().clone() for name in names}
    try:
        with torch.no_grad():
            for name in saved:
                student.threshold(name).fill_(_NO_THRESHOLD)
        yield
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                student.threshold(name).copy_(value)


def run_restored(
    student, batch: Mapping[str, Tensor], time_steps: Sequence[int], analog: set[str], dense: set[str], observe=None
) -> dict[int, Tensor]:
    """Logits of the spiking network at each T in ``time_steps`` (one simulation to the largest), with
    the ``analog`` populations at their exact rates and, of those, the ``dense`` ones without a
    threshold. ``observe(t, rate_map, rates)`` is called at each of those T."""
    if not dense <= analog:
        raise ValueError("a population without a threshold cannot spike: dense must be a subset of analog")
    last = f"block{student.config.num_hidden_layers - 1}.output"
    with _thresholds_removed(student, dense):
        rate_map = student.rate_map(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        theta_last = student.thresholds()[last]
    logits: dict[int, Tensor] = {}

    def observer(t: int, rates: Mapping[str, Tensor], _counts) -> None:
        if t in time_steps:
            logits[t] = student.head(theta_last * rates[last]).float()
            if observe is not None:
                observe(t, rate_map, rates)

    simulate(rate_map, max(time_steps), observer=observer, count_spikes=False, analog=frozenset(analog))
    return logits


def exact_logits(student, batch: Mapping[str, Tensor], dense: bool) -> Tensor:
    """Logits at the exact equilibrium: clipped (T = infinity), or with no threshold (``dense``: the
    dense-equivalent network)."""
    names = student.population_names(student.config.num_hidden_layers) if dense else []
    last = names[-1] if dense else f"block{student.config.num_hidden_layers - 1}.output"
    with _thresholds_removed(student, names):
        rate_map = student.rate_map(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        theta_last = student.thresholds()[last]
    rates = student.equilibrium(rate_map, mode="solve").rates
    return student.head(theta_last * rates[last]).float()


def dense_activations(dense_student, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A dense student's activations at the places of the spiking student's populations (forward hooks):
    the embeddings, and per block key, value, context (the input of the attention output projection),
    attention_output, intermediate (after GELU: the input of the output projection) and output."""
    found: dict[str, Tensor] = {}
    hooks = [dense_student.embeddings.register_forward_hook(lambda m, i, o: found.__setitem__("embeddings", o))]
    for m, block in enumerate(dense_student.blocks):

        def keep(name: str, output: bool = True):
            return (
                (lambda mod, inputs, out: found.__setitem__(name, out))
                if output
                else (lambda mod, inputs: found.__setitem__(name, inputs[0]))
            )

        hooks += [
            block.key.register_forward_hook(keep(f"block{m}.key")),
            block.value.register_forward_hook(keep(f"block{m}.value")),
            block.attention_output.register_forward_pre_hook(keep(f"block{m}.context", output=False)),
            block.attention_norm.register_forward_hook(keep(f"block{m}.attention_output")),
            block.output.register_forward_pre_hook(keep(f"block{m}.intermediate", output=False)),
            block.output_norm.register_forward_hook(keep(f"block{m}.output")),
        ]
    try:
        dense_student(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    finally:
        for hook in hooks:
            hook.remove()
    return found
