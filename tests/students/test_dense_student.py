"""The dense student: the eqspike student's architecture without spikes, in the same harness."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from eqspike.app.cli import main
from eqspike.distill.config import RunConfig
from eqspike.distill.students import build_student
from eqspike.distill.trainer import Distiller
from eqspike.students import DenseBertForSequenceClassification, load_student
from eqspike.students.energy import bert_macs
from tests.conftest import QUIET, tiny_config


def test_the_dense_student_with_every_teacher_layer_is_the_teacher(tiny_teacher):
    """Built from all of the teacher's layers, the dense student computes the teacher's own function:
    its logits, its hidden states and its pre-softmax attention scores (so that the layerwise losses
    compare like with like)."""
    teacher = tiny_teacher.model.eval()
    student = DenseBertForSequenceClassification.from_teacher(teacher).eval()
    assert student.config.teacher_layers == list(range(1, teacher.config.num_hidden_layers + 1))
    torch.manual_seed(0)
    ids = torch.randint(5, teacher.config.vocab_size, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # padding must be masked like the teacher's
    with torch.no_grad():
        theirs = teacher(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        mine = student(ids, mask, output_attention_scores=True)
    torch.testing.assert_close(mine.logits, theirs.logits, atol=1e-5, rtol=1e-4)
    assert len(mine.hidden_values) == len(theirs.hidden_states)
    for ours, reference in zip(mine.hidden_values, theirs.hidden_states):
        torch.testing.assert_close(ours[mask.bool()], reference[mask.bool()], atol=1e-5, rtol=1e-4)
    assert len(mine.attention_scores) == teacher.config.num_hidden_layers
    assert mine.rates is None and mine.spike_counts is None


def test_distill_trains_a_dense_student_and_counts_its_dense_energy(tiny_teacher, toy_files, tmp_path, capsys):
    out = tmp_path / "dense"
    result = Distiller(tiny_config(tiny_teacher, toy_files, out, student_type="dense"), **QUIET).run()
    assert result["student_type"] == "dense" and result["time_steps"] is None and result["train_for"] is None
    assert 0.0 <= result["student_score"] <= 1.0
    # Its energy is that of a dense network of its depth against the teacher's: with 2 of 4 layers, the
    # ratio of the two dense op counts per example, whatever the lengths (it lies between the ratios at
    # the shortest and the longest possible example).
    student = load_student(out / "student")
    c = student.config
    ratios = [
        bert_macs(c.hidden_size, c.intermediate_size, c.num_attention_heads, 2, c.num_labels, n)
        / bert_macs(c.hidden_size, c.intermediate_size, c.num_attention_heads, 4, c.num_labels, n)
        for n in (1, 32)
    ]
    assert min(ratios) <= result["student_energy_ratio"] <= max(ratios)
    assert 0.4 < result["student_energy_ratio"] < 0.6
    # A transformers model like the others, with a card that does not claim time steps.
    assert isinstance(student, DenseBertForSequenceClassification)
    assert type(AutoModelForSequenceClassification.from_pretrained(out / "student")) is DenseBertForSequenceClassification
    card = (out / "student" / "README.md").read_text()
    assert "dense network (no spikes, no time steps)" in card and "--time-steps" not in card and "snn" not in card
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["student_type"] == "dense" and metrics["environment"]["packages"]["torch"]
    # A dense network has no T to sweep: evaluate and diagnose refuse it in one line, and say where its scores are.
    for command in (["evaluate", str(out), "--time-steps", "4"], ["diagnose", str(out)]):
        capsys.readouterr()
        assert main(command) == 2
        error = capsys.readouterr().err
        assert "'eqspike-dense-bert' student" in error and "metrics.json" in error and "Traceback" not in error


def test_the_dense_student_is_trained_by_the_same_recipe_and_moves(tiny_teacher, toy_files, tmp_path):
    """Training changes its weights (the losses reach it), starting from the teacher's layers."""
    config = tiny_config(tiny_teacher, toy_files, tmp_path / "run", student_type="dense")
    start = build_student(tiny_teacher.model, config)
    Distiller(config, **QUIET).run()
    trained = load_student(tmp_path / "run" / "student")
    moved = [name for name, p in trained.state_dict().items() if not torch.equal(p, start.state_dict()[name])]
    assert any(name.startswith("blocks.") for name in moved) and any(name.startswith("classifier") for name in moved)


def test_an_energy_budget_is_refused_for_a_dense_student():
    with pytest.raises(ValueError, match="energy_budget needs an eqspike student"):
        RunConfig(student_type="dense", energy_budget=0.1)
    with pytest.raises(ValueError, match="'dense'"):
        RunConfig(student_type="bogus")


def test_a_trained_dense_student_teaches_a_spiking_student_of_its_shape(tiny_teacher, toy_files, tmp_path):
    """Teacher, then dense student, then spiking student: the dense student is exported as the BERT it
    is (the same logits, hidden states and attention scores), is accepted as --teacher, and the spiking
    student starts from its weights."""
    from eqspike.teacher.targets import teacher_targets

    dense_run = tmp_path / "dense"
    Distiller(tiny_config(tiny_teacher, toy_files, dense_run, student_type="dense", prediction_epochs=1), **QUIET).run()
    dense = load_student(dense_run / "student")
    bert = dense.to_bert()
    assert bert.config.model_type == "bert" and bert.config.num_hidden_layers == 2
    torch.manual_seed(1)
    ids = torch.randint(5, dense.config.vocab_size, (3, 9))
    mask = torch.ones_like(ids)
    mask[2, 5:] = 0
    with torch.no_grad():
        mine = dense(ids, mask, output_attention_scores=True)
        theirs = teacher_targets(
            bert, {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}, [1, 2]
        )
    torch.testing.assert_close(theirs["logits"], mine.logits, atol=1e-5, rtol=1e-4)
    for ours, reference in zip(mine.hidden_values, theirs["hidden"]):
        torch.testing.assert_close(reference[mask.bool()], ours[mask.bool()], atol=1e-5, rtol=1e-4)
    for ours, reference in zip(mine.attention_scores, theirs["scores"]):
        torch.testing.assert_close(reference, ours, atol=1e-5, rtol=1e-4)

    spiking_run = tmp_path / "spiking"
    config = tiny_config(tiny_teacher, toy_files, spiking_run, teacher=str(dense_run / "student"), prediction_epochs=1)
    student = build_student(bert, config)
    assert student.config.teacher_layers == [1, 2]
    for name, value in dense.blocks.state_dict().items():
        assert torch.equal(student.blocks.state_dict()[name], value), name
    result = Distiller(config, **QUIET).run()
    assert result["teacher"] == str(dense_run / "student") and result["teacher_layers"] == [1, 2]
