"""--ema-decay: stage 2 evaluates and keeps an exponential moving average of the weights trained."""

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from eqspike.distill.config import ConfigError, RunConfig
from eqspike.distill.trainer import Distiller
from eqspike.runtime.optim import weight_average
from tests.conftest import QUIET, tiny_config


def test_weight_average_is_the_exponential_moving_average():
    torch.manual_seed(0)
    model = nn.BatchNorm1d(3)  # parameters and buffers
    decay, seen = 0.75, []
    average = weight_average(model, decay)
    for _ in range(4):
        with torch.no_grad():
            model.weight.normal_()
            model.running_mean.normal_()
        seen.append(model.weight.detach().clone())
        average.update_parameters(model)
    expected = seen[0]
    for weight in seen[1:]:
        expected = decay * expected + (1 - decay) * weight
    assert torch.allclose(average.module.weight, expected, atol=1e-6)
    assert not torch.allclose(average.module.weight, model.weight)
    assert torch.equal(average.module.running_mean, model.running_mean)  # buffers are copied, not averaged


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_ema_decay_outside_0_1_is_refused_by_name(decay):
    with pytest.raises(ConfigError, match=rf"ema_decay={decay}"):
        RunConfig(ema_decay=decay)


def checkpoint_parameters(run):
    training = torch.load(run / "checkpoint" / "optimizer.pt")
    averaged = {k.removeprefix("module."): v for k, v in training["ema"].items() if k.startswith("module.")}
    return torch.load(run / "checkpoint" / "student.pt"), averaged


@pytest.mark.slow
def test_the_student_kept_is_the_average_of_the_weights_trained(tiny_teacher, toy_files, tmp_path):
    """One evaluation, at the end of stage 2: the student kept is the average then, not the weights trained."""
    run = tmp_path / "ema"
    config = tiny_config(tiny_teacher, toy_files, run, prediction_epochs=1, evals_per_epoch=1, ema_decay=0.5)
    Distiller(config, **QUIET).run()
    trained, averaged = checkpoint_parameters(run)
    kept = load_file(run / "student" / "model.safetensors")
    weights = [k for k in kept if k.endswith(".weight") and kept[k].ndim == 2]
    assert weights and all(k in averaged for k in weights)
    assert all(torch.equal(kept[k], averaged[k]) for k in weights)
    assert any(not torch.equal(kept[k], trained[k]) for k in weights)


@pytest.mark.slow
def test_a_run_with_ema_resumed_in_stage_2_keeps_the_same_student(tiny_teacher, toy_files, tmp_path):
    """The average is checkpointed: a run cut in stage 2 and resumed keeps the uninterrupted run's student."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    Distiller(tiny_config(tiny_teacher, toy_files, full, ema_decay=0.5), **QUIET).run()
    stopped = Distiller(tiny_config(tiny_teacher, toy_files, cut, ema_decay=0.5, max_steps=9), **QUIET).run()
    assert stopped["status"] == "interrupted" and stopped["stage"] == 1 and stopped["stage_step"] > 0
    Distiller(tiny_config(tiny_teacher, toy_files, cut, ema_decay=0.5, resume=True), **QUIET).run()
    a, b = load_file(full / "student" / "model.safetensors"), load_file(cut / "student" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(x, y) for x, y in zip(checkpoint_parameters(full)[1].values(), checkpoint_parameters(cut)[1].values()))


@pytest.mark.slow
def test_under_a_budget_the_dual_ascent_follows_the_energy_of_the_average(tiny_teacher, toy_files, tmp_path):
    """The student kept is the average, so the budget holds for it: after each step
    E_avg <- d E_avg + (1 - d) E_t and lambda <- max(0, lambda + eta (E_avg - B) / B)."""
    decay, budget, eta = 0.5, 0.01, 2.0
    run = tmp_path / "ema"
    Distiller(
        tiny_config(
            tiny_teacher,
            toy_files,
            run,
            time_steps=4,
            energy_budget=budget,
            energy_dual_step=eta,
            ema_decay=decay,
            intermediate_epochs=0,
            prediction_epochs=1,
            logging_steps=1,
        ),
        **QUIET,
    ).run()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r.get("stage") == "prediction" and "energy" in r]
    assert len(steps) >= 3
    average, weight = None, 0.0
    for row in steps:
        average = row["energy"] if average is None else decay * average + (1 - decay) * row["energy"]
        weight = max(0.0, weight + eta * (average - budget) / budget)
        assert row["average_energy"] == pytest.approx(average, rel=1e-4)
        assert row["energy_weight"] == pytest.approx(weight, rel=1e-3)
    assert weight > 0 and any(abs(r["average_energy"] - r["energy"]) > 1e-4 for r in steps[1:])
