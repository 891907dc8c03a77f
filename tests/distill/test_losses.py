"""The distillation losses and the energy counts, by hand on small tensors (eqspike/distillation.py,
eqspike/energy.py)."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from eqspike.distill.losses import (
    LossWeights,
    Share,
    gold_loss,
    intermediate_loss,
    masked_mse,
    prediction_loss,
    spike_energy,
)
from eqspike.students.energy import StudentEnergy, bert_fan_out, student_macs, synaptic_accumulates

CONFIG = LossWeights(hidden_weight=2.0, attention_weight=0.5, temperature=2.0, gold_weight=0.25)


def test_masked_mse_averages_over_real_positions_and_features():
    student = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])  # (1 example, 3 tokens, 2 features)
    teacher = torch.zeros(1, 3, 2)
    mask = torch.tensor([[[1.0], [1.0], [0.0]]])  # the third token is padding
    # (1 + 4 + 9 + 16) / (2 tokens * 2 features)
    assert masked_mse(student, teacher, mask).item() == pytest.approx(30 / 4)
    # the same sum over a global batch of 5 real tokens
    assert masked_mse(student, teacher, mask, positions=5).item() == pytest.approx(30 / 10)


def test_intermediate_loss_by_hand_with_padding():
    mask = torch.tensor([[1, 1, 0]])
    hidden = [torch.ones(1, 3, 2), torch.full((1, 3, 2), 2.0)]  # student's embeddings and one block
    targets_hidden = [torch.zeros(1, 3, 2), torch.zeros(1, 3, 2)]
    scores = [torch.ones(1, 1, 3, 3)]
    targets = {"hidden": targets_hidden, "scores": [torch.zeros(1, 1, 3, 3)]}
    out = SimpleNamespace(hidden_values=hidden, attention_scores=scores)
    losses = intermediate_loss(out, targets, mask, CONFIG)
    hidden_mse = 1.0 + 4.0  # per layer: mean over 2 real tokens x 2 features
    attention_mse = 1.0  # mean over the 2 x 2 real (query, key) pairs, padding pairs excluded
    assert losses["hidden"].item() == pytest.approx(hidden_mse)
    assert losses["attention"].item() == pytest.approx(attention_mse)
    assert losses["loss"].item() == pytest.approx(2.0 * hidden_mse + 0.5 * attention_mse)


def test_prediction_loss_is_tau_squared_soft_cross_entropy_from_teacher_to_student():
    student, teacher = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    labels = torch.tensor([0])
    losses = prediction_loss(student, teacher, labels, False, CONFIG)
    tau = 2.0
    p_teacher = torch.softmax(teacher / tau, -1)
    log_q = torch.log_softmax(student / tau, -1)
    soft = -(p_teacher * log_q).sum().item() * tau**2  # the teacher's probabilities weight the student's log-probs
    gold = -torch.log_softmax(student, -1)[0, 0].item()
    assert losses["soft"].item() == pytest.approx(soft)
    assert losses["gold"].item() == pytest.approx(gold)
    assert losses["loss"].item() == pytest.approx(soft + 0.25 * gold)
    other_direction = -(torch.softmax(student / tau, -1) * torch.log_softmax(teacher / tau, -1)).sum().item() * tau**2
    assert abs(other_direction - soft) > 0.1  # so the check above pins the direction
    regression = prediction_loss(torch.tensor([[1.5]]), torch.tensor([[0.5]]), torch.tensor([3.5]), True, CONFIG)
    assert regression["soft"].item() == pytest.approx(1.0) and regression["gold"].item() == pytest.approx(4.0)


def test_the_parts_of_a_global_batch_add_up_to_its_loss():
    """Two ranks (or micro-batches) with 3 and 1 examples: each divides by the global counts and is
    multiplied by the replicas; DDP averages, so the mean of the rank losses is the global mean."""
    torch.manual_seed(0)
    lengths = [3, 2, 3, 1]
    mask = torch.tensor([[1 if j < n else 0 for j in range(3)] for n in lengths])
    hidden = [torch.randn(4, 3, 5)]
    scores = [torch.randn(4, 2, 3, 3)]
    targets = {"hidden": [torch.randn(4, 3, 5)], "scores": [torch.randn(4, 2, 3, 3)], "logits": torch.randn(4, 3)}
    logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])

    def parts(rows, share):
        out = SimpleNamespace(hidden_values=[hidden[0][rows]], attention_scores=[scores[0][rows]])
        inter = intermediate_loss(
            out, {"hidden": [targets["hidden"][0][rows]], "scores": [targets["scores"][0][rows]]}, mask[rows], CONFIG, share
        )["loss"]
        pred = prediction_loss(logits[rows], targets["logits"][rows], labels[rows], False, CONFIG, share)["loss"]
        return inter, pred

    whole = parts(slice(None), None)
    share = Share.of(lengths, replicas=2)
    rank0, rank1 = parts([0, 2, 3], share), parts([1], share)
    for k in range(2):
        assert ((rank0[k] + rank1[k]) / 2).item() == pytest.approx(whole[k].item(), rel=1e-6)
    # a stand-in for an empty part contributes nothing
    stand_in = parts([0], dataclasses.replace(share, real=False))
    assert stand_in[0].item() == 0.0 and stand_in[1].item() == 0.0
    assert gold_loss(logits, labels, False).item() == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item())


def test_student_energy_counts_by_hand():
    """One block, hidden 2, FFN 4, one head, 2 labels, a 3-token example, teacher of 2 layers."""
    energy = StudentEnergy(hidden=2, intermediate=4, heads=1, layers=1, labels=2, teacher_layers=2)
    # per step per block: softmax and scaling 1 * 9 * 4 = 36; two LayerNorms 2 * 3 * 2 * 5 = 60; GELU 3 * 4 * 4 = 48;
    # ideal drive of the non-linearly fed populations 3 * (3 * 2 + 4) * 3 = 90. Once: embedding LayerNorm
    # 3 * 2 * 5 = 30, pooler 4, classifier 4.
    assert student_macs(2, 4, 1, 1, 2, 3, time_steps=2) == 2 * (36 + 60 + 48 + 90) + 30 + 4 + 4
    assert energy.dense_pj(3, 2) == pytest.approx(4.6 * (2 * 234 + 38))
    mask = torch.tensor([[1, 1, 0]])
    fan = bert_fan_out(2, 4, 1, mask.sum(1), mask, feedback=False)
    assert fan["embeddings"][0, :, 0].tolist() == [7.0, 7.0, 0.0]  # W_Q, W_K, W_V rows (3 x 2) + the residual
    assert fan["block0.key"][0, 0, 0].item() == 2.0  # every query position of the example
    assert fan["block0.attention_output"][0, 0, 0].item() == 5.0 and "block0.output" not in fan  # read by the head
    counts = {
        "embeddings": torch.tensor([[[1.0, 0.0], [2.0, 1.0], [5.0, 5.0]]]),  # the pad token's spikes do not count
        "block0.key": torch.tensor([[[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]]),
    }
    assert synaptic_accumulates(counts, fan).item() == (1 + 2 + 1) * 7 + 2 * 2
    assert energy.accumulate_pj(counts, mask).item() == pytest.approx(0.9 * 32)


def test_spike_energy_of_quantized_rates_is_T_times_their_magnitude():
    energy = StudentEnergy(hidden=2, intermediate=4, heads=1, layers=1, labels=2, teacher_layers=2)
    mask = torch.tensor([[1, 1]])
    rates = {"embeddings": torch.tensor([[[0.25, -0.5], [0.0, 1.0]]], requires_grad=True)}
    share = Share(examples=1, tokens=2, pairs=4, teacher_pj=100.0)
    value = spike_energy(rates, mask, energy, 4, share)
    # 4 steps x (0.25 + 0.5 + 0 + 1) = 7 spikes, 7 targets each, 0.9 pJ, over 100 pJ
    assert value.item() == pytest.approx(7 * 7 * 0.9 / 100)
    value.backward()
    assert rates["embeddings"].grad[0, 0].tolist() == pytest.approx([4 * 7 * 0.9 / 100, -4 * 7 * 0.9 / 100])
