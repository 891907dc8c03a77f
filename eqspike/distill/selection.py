"""Evaluation during a run and the student it keeps: scores on a run's splits, with the evaluation
batches shared out over the ranks, and after each evaluation on the selection splits the best student
so far saved (``Evaluator.evaluate_and_select``; the rule under an energy budget: ``better``)."""

from __future__ import annotations

from typing import Any

import torch

from eqspike.data.evaluation import evaluate
from eqspike.distill.config import RunConfig
from eqspike.distill.prepare import Prepared
from eqspike.distill.run_directory import RunDirectory
from eqspike.distill.scoring import score_spiking
from eqspike.runtime.distributed import Sharding
from eqspike.students import STUDENTS


def better(key: list, best: list | None, energy_weight: float, budget: float | None) -> bool:
    """Whether an evaluation ``key`` = [within budget, score, energy] beats the best so far. Within
    the budget (or without one) the higher score wins, and any evaluation within it beats any
    outside it. While none is within it, the higher merit score - lambda (E - B) / B wins, lambda the
    energy penalty's weight now: the price of energy the dual ascent has reached, so that a student
    1% cheaper but 16 points worse is not kept over a better one (as the least-energy rule did)."""
    if best is None:
        return True
    if key[0] != best[0]:
        return key[0]
    if key[0]:
        return key[1] > best[1]
    if len(best) == 2:  # a checkpoint of eqspike <= 0.2: [False, -energy]
        best = [False, float("-inf"), -best[1]]

    def merit(score: float, energy: float) -> float:
        return score - energy_weight * (energy - budget) / budget

    return merit(key[1], key[2]) > merit(best[1], best[2])


class Evaluator:
    """The scores of a run (every rank takes part; rank 0 logs and saves), and the student kept."""

    def __init__(self, config: RunConfig, run_dir: RunDirectory, sharding: Sharding, device: torch.device, log) -> None:
        self.config, self.run_dir, self.sharding, self.device, self.log = config, run_dir, sharding, device, log

    def evaluate(self, logits_fn, data: Prepared, desc: str, splits=None) -> dict[str, float]:
        """Metrics on ``splits`` (default: the dev splits), with the batches shared out over the ranks
        (every rank gets them all)."""
        return evaluate(
            logits_fn,
            data.task,
            data.splits if splits is None else splits,
            self.config.eval_batch_size,
            self.device,
            desc,
            self.sharding,
        )

    def score_spiking(self, student, data: Prepared, T: int, spike_factor: bool = False, splits=None):
        """The student simulated as a spiking network for ``T`` steps, with the energy of its spikes."""
        return score_spiking(
            student, data, T, self.config.eval_batch_size, self.device, self.sharding, spike_factor, splits=splits
        )

    def evaluate_and_select(self, student, data: Prepared, state: dict[str, Any]) -> None:
        """Score on the selection splits (``Prepared.selection``: held-out training data, or the dev set
        with ``selection: dev``); rank 0 saves the best student so far. A student trained for its time steps is
        scored as it is deployed: simulated for T steps, its energy measured from its spikes. Under an
        energy budget the best student is the best-scoring one within budget (while none is, the best by
        score - lambda (E - B) / B: ``better``). A student trained for T = infinity is scored at its equilibrium (solve)."""
        c = self.config
        student.eval()
        metrics, energy, mode = self._selection_scores(student, data, state)
        student.train()
        value = metrics[data.task.metric]
        self.run_dir.log(
            {"step": state["global_step"], "eval": metrics, "mode": mode, "energy_ratio": energy, "split": c.selection}
        )
        feasible = c.energy_budget is None or energy <= c.energy_budget
        key = [feasible, value, energy]
        improved = better(key, state.get("best_key"), state["energy_weight"], c.energy_budget)
        self.log(
            f"step {state['global_step']}: {'dev' if c.selection == 'dev' else 'selection'} {data.task.metric} {value:.4f} ({mode}"
            + (f", energy {energy:.3f}" if energy is not None else "")
            + ")"
            + (" *best*" if improved else "")
        )
        if improved:
            state.update(best_score=value, best_step=state["global_step"], best_key=key)
            self.run_dir.save_student(student, data.tokenizer, best={"step": state["global_step"], "score": value})

    def _selection_scores(self, student, data: Prepared, state: dict[str, Any]) -> tuple[dict[str, float], float | None, str]:
        """(metrics, energy ratio or None, mode) of the student on the selection splits: simulated for T
        steps (its spikes-per-rate factor kept in ``state`` under a budget) or solved for T = infinity."""
        c = self.config
        energy = None
        if STUDENTS[c.student_type].train_for(c) == "time_steps":
            score = self.score_spiking(
                student, data, c.time_steps, spike_factor=c.energy_budget is not None, splits=data.selection
            )
            metrics, energy, mode = score.metrics, score.energy_ratio, f"simulate T={c.time_steps}"
            if score.spike_factor is not None:
                state["spike_factor"] = score.spike_factor
        else:
            metrics, mode = (
                self.evaluate(lambda b: student(**b, mode="solve").logits, data, "student selection", data.selection),
                "solve",
            )
        return metrics, energy, mode
