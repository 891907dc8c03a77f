import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from eqspike.core.neurons import time_step_rate
from eqspike.students.initialization import uniform_layer_map
from eqspike.students.spiking_bert import SpikingBertForSequenceClassification
from eqspike.students.spiking_bert_config import POPULATION_KINDS
from tests.conftest import make_tiny_bert


def load_pair(tmp_path, layers=None, **fields):
    folder = make_tiny_bert(tmp_path / "bert", head_labels=3, seed=3)
    teacher = AutoModelForSequenceClassification.from_pretrained(str(folder), attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    batch = dict(tokenizer(["the movie was good", "a very dull plot and awful acting", "fun"], padding=True, return_tensors="pt"))
    student = SpikingBertForSequenceClassification.from_teacher(teacher, layers, **fields)
    return teacher, student, batch


def test_uniform_layer_map():
    assert uniform_layer_map(12, 4) == [3, 6, 9, 12]
    assert uniform_layer_map(6, 3) == [2, 4, 6]
    assert uniform_layer_map(4, 4) == [1, 2, 3, 4]


def test_student_with_unclipped_thresholds_is_the_teacher_at_equilibrium(tmp_path):
    teacher, student, batch = load_pair(tmp_path)
    student.calibrate_thresholds([batch], quantile=1.0)  # nothing is clipped on this batch
    with torch.no_grad():
        expected = teacher(**batch, output_hidden_states=True)
        out = student(**batch, mode="solve")
    mask = batch["attention_mask"].bool()
    assert torch.allclose(out.logits, expected.logits, atol=1e-5)
    for mine, theirs in zip(out.hidden_values, expected.hidden_states):
        assert torch.allclose(mine[mask], theirs[mask], atol=1e-5)


def test_spiking_student_converges_to_its_equilibrium_on_every_population(tmp_path):
    _, student, batch = load_pair(tmp_path, layers=2)
    student.calibrate_thresholds([batch])
    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        star = student(**batch, mode="solve").rates
        error = {
            T: {
                name: (rate - star[name])[mask].abs().mean().item()
                for name, rate in student(**batch, mode="simulate", time_steps=T).rates.items()
            }
            for T in (16, 128, 256)
        }
    for name in star:  # LayerNorm-, GELU- and softmax-fed populations included
        # 1/T: doubling T halves the error (asymptotically); 8x the steps cut it by at least ~4
        assert error[256][name] <= 0.6 * error[128][name], (name, error)
        assert error[128][name] <= 0.3 * error[16][name], (name, error)


@pytest.mark.parametrize("for_time_steps", [False, True])
def test_gradients_reach_every_trained_weight(tmp_path, for_time_steps):
    """Every trainable parameter gets a gradient; trained for a deployment T, the thresholds too."""
    _, student, batch = load_pair(tmp_path, layers=2, time_steps=4, quantize_rates=for_time_steps)
    student.calibrate_thresholds([batch], time_steps=4 if for_time_steps else None)
    student.train_thresholds(for_time_steps)
    student.train()
    out = student(**batch, output_attention_scores=True)
    (out.logits.sum() + sum(s.sum() for s in out.attention_scores) + sum(v.sum() for v in out.hidden_values)).backward()
    trained = {name: p for name, p in student.named_parameters() if p.requires_grad}
    assert [name for name, p in trained.items() if p.grad is None] == []
    thresholds = [name for name in trained if "threshold" in name]
    assert len(thresholds) == (13 if for_time_steps else 0)  # embeddings + 2 blocks x 6 populations
    if for_time_steps:  # LSQ-style: thresholds of populations read by the losses move
        assert all(trained[name].grad.abs().sum() > 0 for name in thresholds if "key" not in name)


def test_simulate_forward_trains_on_the_spiking_network_with_thresholds(tmp_path):
    """--train-forward simulate: the values are the T-step simulation's (logits included), the
    gradient is the quantized map's at the simulated rates, and the thresholds get one."""
    _, student, batch = load_pair(tmp_path, layers=2, time_steps=4, quantize_rates=True)
    student.calibrate_thresholds([batch], time_steps=4)
    student.train_thresholds(True)
    out = student(**batch, mode="simulate")
    with torch.no_grad():
        simulated = student(**batch, mode="simulate")
        solved = student(**batch, mode="solve")
    assert torch.equal(out.logits.detach(), simulated.logits)
    for name, rate in out.rates.items():
        assert torch.equal(rate.detach(), simulated.rates[name]), name
    # the simulation is not the quantized map here (upstream rates move while the spikes are counted)
    assert not torch.equal(simulated.rates["block1.output"], solved.rates["block1.output"])
    (out.logits.sum() + out.hidden_values[-1].pow(2).sum()).backward()
    thresholds = {n: p.grad for n, p in student.named_parameters() if "threshold" in n}
    assert thresholds["blocks.1.threshold_output"].abs().sum() > 0
    assert student.blocks[0].intermediate.weight.grad.abs().sum() > 0


def test_spiking_run_gives_the_rate_estimate_of_the_rates_trained_on(tmp_path):
    """Scoring under an energy budget: a student trained on its simulation takes the estimate from the
    run it just scored (no second simulation); one trained on the quantized map from that map."""
    _, student, batch = load_pair(tmp_path, layers=2, time_steps=4, quantize_rates=True)
    student.calibrate_thresholds([batch], time_steps=4)
    with torch.no_grad():
        assert student.spiking_run(batch, 4)[3] is None
        for forward in ("simulate", "solve"):
            student.config.equilibrium.forward = forward
            logits, spikes, dense, estimate = student.spiking_run(batch, 4, rate_estimate=True)
            assert estimate == pytest.approx(student.rate_spike_pj(batch, 4), rel=1e-6), forward
            assert spikes > 0 and dense > 0
        solved_estimate = estimate
        student.config.equilibrium.forward = "simulate"
        assert student.spiking_run(batch, 4, rate_estimate=True)[3] != pytest.approx(solved_estimate, rel=1e-6)


def test_threshold_init_quantile_starts_a_student_trained_for_T_at_the_quantile(tmp_path):
    """prepare(): trained for T, threshold_init 'quantizer' starts from Q_T's least-squares threshold
    (at or below the quantile, lower at small T); 'quantile' from the quantile itself, as for T =
    infinity; both are then trained."""
    thresholds = {}
    for init in ("quantizer", "quantile"):
        _, student, batch = load_pair(tmp_path / init, layers=2, time_steps=2, quantize_rates=True, threshold_init=init)
        student.prepare([batch], batch)
        thresholds[init] = {n: p.detach().clone() for n, p in student.named_parameters() if "threshold" in n}
        assert all(p.requires_grad for n, p in student.named_parameters() if "threshold" in n)
    _, reference, batch = load_pair(tmp_path / "reference", layers=2, time_steps=2)
    reference.calibrate_thresholds([batch])  # T = infinity: the quantile
    for name, theta in thresholds["quantile"].items():
        assert torch.equal(theta, dict(reference.named_parameters())[name].detach()), name
        assert (thresholds["quantizer"][name] <= theta).all(), name
    assert any((thresholds["quantizer"][n] < t).any() for n, t in thresholds["quantile"].items())
    with pytest.raises(ValueError, match="threshold_init"):
        load_pair(tmp_path / "bad", layers=2, threshold_init="median")


def test_solve_of_a_student_trained_for_T_is_the_quantized_map(tmp_path):
    """With quantize_rates, 'solve' gives rates on the grid k/T; without, it gives the exact clamp."""
    _, student, batch = load_pair(tmp_path, layers=2, time_steps=4, quantize_rates=True)
    student.calibrate_thresholds([batch], time_steps=4)
    with torch.no_grad():
        rates = student(**batch, mode="solve").rates
        exact = student.equilibrium(student.rate_map(**batch), mode="solve").rates
        at_8 = student(**batch, mode="solve", time_steps=8).rates
    for name, rate in rates.items():
        assert torch.equal(rate * 4, (rate * 4).round()), name
        assert torch.equal(at_8[name] * 8, (at_8[name] * 8).round()), name
    assert any(not torch.equal(exact[n] * 4, (exact[n] * 4).round()) for n in exact)


def test_save_and_load_round_trip(tmp_path):
    _, student, batch = load_pair(tmp_path, layers=2, weight_bits=1.58, time_steps=12)
    student.calibrate_thresholds([batch])
    student.save_pretrained(tmp_path / "student")
    loaded = SpikingBertForSequenceClassification.from_pretrained(tmp_path / "student")
    assert loaded.config.weight_bits == 1.58 and loaded.config.time_steps == 12
    with torch.no_grad():
        a = student.eval()(**batch, mode="simulate").logits
        b = loaded(**batch, mode="simulate").logits
    assert torch.equal(a, b)
    for block in loaded.blocks:
        for layer in (block.query, block.key, block.value, block.attention_output, block.intermediate, block.output):
            assert len(torch.unique(layer.effective_weight().detach())) <= 3


def test_a_student_saved_by_eqspike_0_1_still_loads_and_computes_the_same():
    """tests/fixtures/student_v0_1 was written by eqspike 0.1.0 (flat solver keys, thresholds as buffers, the
    truncating neuron). It loads, keeps its neuron, and gives the logits it gave then."""
    import json
    from pathlib import Path

    from eqspike.students import load_student
    from eqspike.teacher.store import load_tokenizer

    folder = Path(__file__).resolve().parents[1] / "fixtures" / "student_v0_1"
    expected = json.loads((folder.parent / "student_v0_1_logits.json").read_text())
    student = load_student(folder)
    assert student.config.rounding == "trunc" and student.config.equilibrium.max_iter == 30
    assert student.config.equilibrium.forward == "solve" and not student.config.quantize_rates
    batch = dict(load_tokenizer(folder)(expected["texts"], padding=True, return_tensors="pt"))
    with torch.no_grad():
        simulated = student(**batch, mode="simulate", time_steps=8).logits
        solved = student(**batch, mode="solve").logits
    assert torch.allclose(simulated, torch.tensor(expected["simulate_T8"]), atol=1e-6)
    assert torch.allclose(solved, torch.tensor(expected["solve"]), atol=1e-6)


def test_burst_populations_have_the_resolution_of_levels_times_T(tmp_path):
    """spike_levels {kind: B}: those populations reach Q_{BT} in T steps (the embeddings, driven by a constant
    current, exactly, with B T |a| spikes, up to B a step), the quantized map's rates lie on the grid
    1 / (B T), and the simulation at T lies closer to the exact equilibrium than with single spikes."""
    _, student, batch = load_pair(
        tmp_path / "burst", layers=2, time_steps=4, quantize_rates=True, spike_levels={"embeddings": 4, "intermediate": 2}
    )
    assert student.config.spike_levels == {"embeddings": 4, "intermediate": 2}
    assert student.neuron_of("block1.intermediate").levels == 2 and student.neuron_of("block1.output").levels == 1
    student.calibrate_thresholds([batch], time_steps=4)
    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        out = student(**batch, mode="simulate", count_spikes=True)
        rate_map = student.rate_map(**batch)
        embedded = rate_map.populations[0].current()
        neuron = rate_map.neuron_of(rate_map.populations[0])
        assert torch.equal(out.rates["embeddings"], time_step_rate(embedded, neuron, 4))
        assert torch.allclose(out.spike_counts["embeddings"], 16 * out.rates["embeddings"].abs())
        assert out.spike_counts["block0.intermediate"].max() <= 8 and out.spike_counts["block0.output"].max() <= 4
        solved = student(**batch, mode="solve").rates
        for name, levels in (("block0.intermediate", 2), ("block1.intermediate", 2), ("block1.output", 1)):
            grid = solved[name] * 4 * levels
            assert torch.equal(grid, grid.round()), name
        assert not torch.equal(solved["block0.intermediate"] * 4, (solved["block0.intermediate"] * 4).round())
        exact = student.equilibrium(student.rate_map(**batch), mode="solve").rates
    _, single, _ = load_pair(tmp_path / "single", layers=2, time_steps=4, quantize_rates=True)
    _, fine, _ = load_pair(
        tmp_path / "fine", layers=2, time_steps=4, quantize_rates=True, spike_levels={kind: 4 for kind in POPULATION_KINDS}
    )
    for model in (single, fine):
        model.load_state_dict(student.state_dict())  # the same weights and thresholds
    with torch.no_grad():
        errors = [
            sum((m(**batch, mode="simulate").rates[n] - exact[n])[mask].abs().mean().item() for n in exact)
            for m in (single, fine)
        ]
    assert errors[1] < 0.5 * errors[0], errors
    fine.save_pretrained(tmp_path / "saved")
    loaded = SpikingBertForSequenceClassification.from_pretrained(tmp_path / "saved")
    assert loaded.config.spike_levels == fine.config.spike_levels
    with torch.no_grad():
        assert torch.equal(loaded(**batch, mode="simulate").logits, fine.eval()(**batch, mode="simulate").logits)
    with pytest.raises(ValueError, match="spike_levels kind='mlp' is not valid"):
        load_pair(tmp_path / "bad", layers=2, spike_levels={"mlp": 2})
