"""Where the points go: the attribution of the spiking student's gap to its populations."""

import numpy as np
import pytest
import torch

from eqspike.analysis.attribution import attribute
from eqspike.analysis.attribution_report import format_attribution
from eqspike.analysis.diagnostics import diagnose
from eqspike.analysis.restoration import exact_logits, run_restored
from eqspike.data.batches import EncodedSplit, sequential_batches
from eqspike.data.tasks import load_task_data
from eqspike.students.spiking_bert import SpikingBertForSequenceClassification


@pytest.fixture(scope="module")
def toy_split(tiny_teacher, toy_files):
    task = load_task_data(train_file=toy_files[0], validation_file=toy_files[1])
    return task, EncodedSplit(task.validation["validation"][:24], tiny_teacher.tokenizer, 32)


def calibrated_student(teacher, split, layers: int, time_steps: int = 4):
    student = SpikingBertForSequenceClassification.from_teacher(teacher, layers, time_steps=time_steps).eval()
    batches = [{k: v for k, v in b.items() if k not in ("index", "labels")} for b in sequential_batches(split, 12)]
    student.calibrate_thresholds(batches, time_steps=time_steps)
    return student


def test_the_dense_equivalent_of_a_student_with_every_teacher_layer_is_the_teacher(tiny_teacher, toy_split):
    """With no threshold anywhere, the spiking student's map is the ANN its weights are: built from all
    the teacher's layers, the teacher itself, although its calibrated thresholds clip and round. Its
    populations put back without thresholds and run for T steps give the same at every step."""
    teacher = tiny_teacher.model.eval()
    _, split = toy_split
    student = calibrated_student(teacher, split, teacher.config.num_hidden_layers)
    batch = next(iter(sequential_batches(split, 12)))
    batch = {k: v for k, v in batch.items() if k not in ("index", "labels")}
    names = set(student.population_names(student.config.num_hidden_layers))
    before = {name: student.threshold(name).clone() for name in names}
    with torch.no_grad():
        dense = exact_logits(student, batch, dense=True)
        analog = run_restored(student, batch, [1, 3], names, names)  # no neuron spikes: exact at every step
        spiking = run_restored(student, batch, [2], set(), set())[2]
        theirs = teacher(**batch).logits
    torch.testing.assert_close(analog[1], dense)
    torch.testing.assert_close(analog[3], dense)
    torch.testing.assert_close(dense, theirs, atol=1e-4, rtol=1e-3)
    assert (spiking - theirs).abs().max() > 1e-3  # the spiking network at T = 2 is not the teacher
    assert all(torch.equal(student.threshold(name), before[name]) for name in names)  # thresholds restored


def test_attribution_brackets_the_spiking_score_between_the_maps_diagnose_reports(tiny_teacher, toy_split):
    task, split = toy_split
    student = calibrated_student(tiny_teacher.model, split, 1)
    a = attribute(student, task, split, [2, 4], batch_size=12)
    assert set(a.recovered["block0"]) == {"clipped"}  # the default mode
    d = diagnose(student, task, split, [2, 4], batch_size=12)
    assert a.examples == len(split) == d.examples
    assert a.spiking_score == d.score_vs_T  # the same simulation
    assert a.clipped_score == pytest.approx(d.solve_score)  # the exact (T = infinity) equilibrium
    # Everything put back clipped is the clipped map, and dense the dense-equivalent one: the points
    # recovered are the whole gap, at every T.
    whole = attribute(
        student, task, split, [2, 4], batch_size=12, parts={"all": student.population_names(1)}, modes=("clipped", "dense")
    )
    for k in range(2):
        assert whole.recovered["all"]["clipped"][k] == pytest.approx(a.clipped_score - a.spiking_score[k])
        assert whole.recovered["all"]["dense"][k] == pytest.approx(a.dense_equivalent_score - a.spiking_score[k])
    assert set(a.recovered) == {
        "kind:embeddings",
        "kind:key",
        "kind:value",
        "kind:context",
        "kind:attention_output",
        "kind:intermediate",
        "kind:output",
        "block0",
        "head population",
    }
    for p in a.populations:
        for k, t in enumerate(a.time_steps):
            assert 0 <= p.clipped_frac[k] <= 1 and 0 <= p.zeroed_frac[k] <= 1
            assert p.clip_error[k] >= 0 and p.spike_error[k] >= 0
    assert all(0 <= v <= 1 for v in a.agreement_with_dense_equivalent)
    text = format_attribution(a)
    assert "| head population |" in text and "| block0.intermediate |" in text


def test_clipping_and_zeroing_are_counted_where_the_thresholds_say(tiny_teacher, toy_split):
    """Thresholds far below the LayerNorms' outputs clip nearly all of them; far above every activation,
    at T = 2, they round the embeddings to zero and clip nothing."""
    task, split = toy_split
    student = calibrated_student(tiny_teacher.model, split, 1)
    names = student.population_names(1)
    with torch.no_grad():
        for name in names:
            student.threshold(name).fill_(1e-3)
    low = attribute(student, task, split, [2], batch_size=12, parts={})
    with torch.no_grad():
        for name in names:
            student.threshold(name).fill_(1e3)
    high = attribute(student, task, split, [2], batch_size=12, parts={})
    normalized = ("embeddings", "block0.attention_output", "block0.output")  # LayerNorm: O(1) whatever the thresholds
    assert min(p.clipped_frac[0] for p in low.populations if p.name in normalized) > 0.9
    assert high.populations[0].name == "embeddings" and high.populations[0].zeroed_frac[0] > 0.9  # the others read zeros
    assert max(p.clipped_frac[0] for p in high.populations) == 0
    assert low.recovered == {}


def test_analog_populations_take_their_exact_rate_at_every_step():
    """A population put back to the ANN does not spike: at every step its rate is clamp(I / V_th) of its
    current from the upstream running rates; the others spike as before."""
    from eqspike.core.neurons import NeuronConfig
    from eqspike.core.rate_map import Population, RateMap
    from eqspike.core.simulation import simulate

    current = torch.tensor([[0.3, -0.7, 1.6]])
    rate_map = RateMap(
        [Population("a", (), lambda: current), Population("b", ("a",), lambda a: 2 * a)], NeuronConfig(threshold=1.0, signed=True)
    )
    seen = []
    simulate(
        rate_map,
        3,
        analog=frozenset({"a"}),
        observer=lambda t, rates, counts: seen.append((rates["a"].clone(), rates["b"].clone(), set(counts))),
    )
    for a, b, counted in seen:
        assert a[0].tolist() == pytest.approx([0.3, -0.7, 1.0]) and counted == {"b"}
    spiking = simulate(rate_map, 3)
    assert spiking.rates["a"][0].tolist() != pytest.approx([0.3, -0.7, 1.0])  # at T = 3 spikes round
    assert seen[-1][1][0].tolist() == pytest.approx([2 / 3, -1.0, 1.0])  # b spikes on a constant 2 a: Q_3(0.6) = 2/3
    with pytest.raises(ValueError, match=r"does not have: \['c'\]"):
        simulate(rate_map, 2, analog=frozenset({"c"}))


def test_the_dense_students_activations_are_taken_where_the_populations_sit(tiny_teacher, toy_split):
    """Built from the same teacher layers, the dense student's hooked activations are, population by
    population, the values of the spiking student's dense-equivalent network: the hooks sit at the
    populations' places (context before the output projection, intermediate after GELU)."""
    from eqspike.analysis.restoration import _NO_THRESHOLD, _thresholds_removed, dense_activations
    from eqspike.students import DenseBertForSequenceClassification

    task, split = toy_split
    student = calibrated_student(tiny_teacher.model, split, 2)
    dense = DenseBertForSequenceClassification.from_teacher(tiny_teacher.model, 2).eval()
    batch = next(iter(sequential_batches(split, 12)))
    batch = {k: v for k, v in batch.items() if k not in ("index", "labels")}
    names = student.population_names(2)
    with torch.no_grad():
        found = dense_activations(dense, batch)
        with _thresholds_removed(student, names):
            rate_map = student.rate_map(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        rates = student.equilibrium(rate_map, mode="solve").rates
    assert set(found) == set(names)
    mask = batch["attention_mask"].bool()
    for name in names:
        torch.testing.assert_close(found[name][mask], _NO_THRESHOLD * rates[name][mask], atol=1e-4, rtol=1e-3)
    # and the comparison: fractions, distances, and a student of another shape refused
    a = attribute(student, task, split, [2, 8], batch_size=12, parts={}, dense_student=dense)
    for p in a.populations:
        assert all(0 <= v <= 1 for v in p.dense_clipped_frac + p.dense_zeroed_frac) and min(p.distance_to_dense) >= 0
    assert "The dense student's activations" in format_attribution(a)
    with pytest.raises(ValueError, match="the dense student must have the spiking student's shape"):
        attribute(
            student,
            task,
            split,
            [2],
            parts={},
            dense_student=DenseBertForSequenceClassification.from_teacher(tiny_teacher.model, 1),
        )


def test_a_regression_student_reports_no_class_agreement(tiny_teacher, toy_split):
    from dataclasses import replace

    task, split = toy_split
    student = calibrated_student(tiny_teacher.model, split, 1)
    student.classifier = torch.nn.Linear(student.config.hidden_size, 1)  # one output: a regression head
    student.config.num_labels = 1
    a = attribute(student, replace(task, label_names=None, metric="pearson"), split, [2], batch_size=12, parts={})
    assert a.agreement_with_dense_equivalent is None and a.metric == "pearson"
    assert "| class agrees with the dense-equivalent | - |" in format_attribution(a)


@pytest.mark.parametrize("levels", [1, 2, 4])
def test_below_the_resolution_counts_a_burst_neurons_finer_steps(levels):
    """A dense activation h is 'below the resolution' of a population at T when 0 < |h| < theta / (2 B T)
    (rounding): a burst neuron with B levels carries values B times finer."""
    from types import SimpleNamespace

    from eqspike.analysis.attribution import _add_dense_comparison
    from eqspike.core.neurons import NeuronConfig

    theta, t = 1.0, 4
    h = torch.tensor([[[0.01, 0.03, 0.06, 0.1, 0.2, 0.0]]])  # |h| against theta / (2 B T) = 0.125 / B
    population = SimpleNamespace(name="p")
    rate_map = SimpleNamespace(populations=[population], neuron_of=lambda _: NeuronConfig(levels=levels))
    sums = {"p": np.zeros((1, 4))}
    _add_dense_comparison(
        sums, 0, t, rate_map, {"p": torch.zeros_like(h)}, {"p": torch.tensor(theta)}, torch.ones(1, 1, 1), {"p": h}
    )
    assert sums["p"][0][1] == sum(0 < abs(v) < theta / (2 * levels * t) for v in h.flatten().tolist())
