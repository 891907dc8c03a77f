"""Training under an energy budget B (a fraction of the teacher's energy per example).

The loss adds lambda x E, the estimated energy ratio of the step, and after every step
lambda <- max(0, lambda + energy_dual_step (E - B) / B) (dual ascent on the constraint E <= B, its
violation measured relative to the budget so that one step size suits any B).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from eqspike.distill.config import RunConfig


def dual_ascent(c: RunConfig, losses: dict[str, Tensor], state: dict[str, Any], budget: float, average) -> None:
    """lambda <- max(0, lambda + energy_dual_step (E - B) / B): the weight grows while the estimate E
    (the step's, or the weight average's: ``budgeted_energy``) is over the budget B; logged with the losses."""
    state["energy_weight"] = max(
        0.0,
        state["energy_weight"]
        + c.energy_dual_step * (budgeted_energy(c, losses["energy"].item(), state, average) - budget) / budget,
    )
    losses["energy_weight"] = torch.tensor(state["energy_weight"])
    if average is not None:
        losses["average_energy"] = torch.tensor(state["average_energy"])


def budgeted_energy(c: RunConfig, energy: float, state: dict[str, Any], average) -> float:
    """The energy the budget holds for: the step's estimate E_t, or, when the moving average of the
    weights is the student kept, the same average of the estimates, E_avg <- d E_avg + (1 - d) E_t
    (the first step copies E_t): to first order the averaged weights' energy, which lags the trained
    weights' while training lowers it."""
    if average is None:
        return energy
    previous = state.get("average_energy")
    decay = c.ema_decay
    state["average_energy"] = energy if previous is None else decay * previous + (1 - decay) * energy
    return state["average_energy"]


def starting_energy_warning(state: dict[str, Any], budget: float) -> str | None:
    """A warning when the best student so far, once evaluated at the start of the budgeted stage (the
    energy in ``best_key``), is within the budget already: the budget binds only if training raises it."""
    start = (state.get("best_key") or [None, None, None])[2]
    if start is not None and start <= budget:
        return (
            f"warning: the student starts this stage at {start:.3f} of the teacher's energy, within the "
            f"budget {budget:g}: the budget binds only if training raises its energy"
        )
    return None
