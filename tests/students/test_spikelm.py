import json

import pytest
import torch

from eqspike.app.cli import main
from eqspike.students.spikelm import ElasticBiSpike, ElasticBiSpiking, SpikeLinear


def test_elastic_bi_spike_is_ternary_with_threshold_alpha_over_two():
    alpha = torch.tensor(2.0)
    u = torch.tensor([-5.0, -1.2, -0.9, 0.0, 0.9, 1.01, 3.0])
    s = ElasticBiSpike.apply(u, alpha)
    assert s.tolist() == [-2.0, -2.0, 0.0, 0.0, 0.0, 2.0, 2.0]  # fires +-alpha once |u| > alpha / 2 = 1
    assert set((s / alpha).tolist()) <= {-1.0, 0.0, 1.0}


def test_elastic_bi_spike_gradient_is_the_clipped_straight_through_one():
    alpha = torch.tensor(2.0)
    u = torch.tensor([-2.5, -2.0, -0.5, 0.3, 1.99, 2.0, 2.01], requires_grad=True)
    ElasticBiSpike.apply(u, alpha).sum().backward()
    assert u.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]  # 1 where |u| <= alpha


def test_alpha_is_set_from_the_first_batch_per_step_and_then_frozen():
    neurons = ElasticBiSpiking(time_steps=2)
    first = torch.tensor([[1.0, -3.0]])
    neurons(first, 0)
    assert neurons.alpha[0].item() == pytest.approx(2 * 2.0)  # 2 mean|u|
    assert neurons.alpha[1].item() == 1.0 and not neurons.initialised[1]
    neurons(torch.tensor([[10.0, 10.0]]), 0)
    assert neurons.alpha[0].item() == pytest.approx(4.0)  # frozen


@pytest.mark.parametrize(
    "reset, x, expected",
    [
        ("spikelm", 2.0, [0.0, 8.0, 0.0]),
        ("soft", 2.0, [0.0, 0.0, 0.0]),
        ("spikelm", 4.5, [8.0, 8.0, 8.0]),
        ("soft", 4.5, [8.0, 0.0, 8.0]),
    ],
)
def test_membrane_update_of_each_reset(reset, x, expected):
    """alpha = 8 (a spike needs |u| >= 4, and s = 8), the same x every step. SpikeLM's update,
    u_t = 0.25 u_(t-1) (alpha - s) + x_t, multiplies a silent membrane by 2 and empties a firing one;
    the soft reset, u_t = 0.25 (u_(t-1) - s) + x_t, does neither.
    x = 2: t0 u = 2, no spike.  t1: spikelm 0.25 * 2 * 8 + 2 = 6 -> spike; soft 0.25 * 2 + 2 = 2.5.
    t2: spikelm 0.25 * 6 * (8 - 8) + 2 = 2; soft 0.25 * 2.5 + 2 = 2.625: no spike.
    x = 4.5: t0 u = 4.5, a spike.  t1: spikelm 0 + 4.5 -> spike; soft 0.25 * (4.5 - 8) + 4.5 = 3.625.
    t2: spikelm 4.5 -> spike; soft 0.25 * 3.625 + 4.5 = 5.41 -> spike."""
    layer = SpikeLinear(1, 1, time_steps=3, reset=reset)
    with torch.no_grad():
        layer.linear.weight.fill_(1.0)
        layer.linear.bias.zero_()
        layer.neurons.alpha.fill_(8.0)
        layer.neurons.initialised.fill_(True)
    out = layer(torch.full((3, 1, 1, 1), x)).view(-1).tolist()
    assert out == expected


def test_compare_runs_both_and_writes_the_rows(tiny_teacher, toy_files, tmp_path, capsys, monkeypatch):
    out = tmp_path / "compare"
    code = main(
        [
            "compare",
            "--teacher",
            tiny_teacher.path,
            "--train-file",
            str(toy_files[0]),
            "--validation-file",
            str(toy_files[1]),
            "--max-seq-length",
            "32",
            "--device",
            "cpu",
            "--student-layers",
            "2",
            "--batch-size",
            "16",
            "--intermediate-epochs",
            "1",
            "--prediction-epochs",
            "1",
            "--intermediate-lr",
            "1e-3",
            "--prediction-lr",
            "1e-3",
            "--calibration-examples",
            "32",
            "--time-steps",
            "4",
            "8",
            "--out",
            str(out),
            "--spikelm-reset",
            "soft",  # the reference membrane diverges at T = 8 on this toy (see below)
            "--baselines",
            "ann,qnn,spikelm,infinity",
        ]
    )
    assert code == 0
    result = json.loads((out / "compare.json").read_text())
    rows = result["rows"]
    assert {(r["method"], r["time_steps"]) for r in rows} == {
        (m, T) for m in ("eqspike", "eqspike-inf", "spikelm", "dense", "dense-int8", "qnn", "teacher-int8") for T in (4, 8)
    }
    for row in (r for r in rows if r["method"] != "teacher-int8"):  # trained here: a training step measured
        assert set(row) == {
            "method",
            "time_steps",
            "score",
            "train_step_s",
            "peak_train_mem_mb",
            "firing_rate",
            "energy_pj",
            "energy_pj_compute_memory",
        }
        assert 0 <= row["score"] <= 1 and row["train_step_s"] > 0 and 0 < row["energy_pj"] < row["energy_pj_compute_memory"]
        assert (row["firing_rate"] == 0) if row["method"] in ("dense", "dense-int8", "qnn") else (0 < row["firing_rate"] < 1)
    # The teacher as W8A8: scored on the dev set, cheaper than the FP32 teacher under both conventions
    teacher_int8 = next(r for r in rows if r["method"] == "teacher-int8")
    assert 0 <= teacher_int8["score"] <= 1 and teacher_int8["train_step_s"] is None
    assert teacher_int8["energy_pj"] < result["teacher_energy_pj"]
    assert teacher_int8["energy_pj_compute_memory"] < result["teacher_energy_pj_compute_memory"]
    # The dense student is one network, reported beside every T; it is the trained run's own score. As W8A8 it
    # costs less (the same network, 8-bit multiply-accumulates and traffic).
    dense = [r for r in rows if r["method"] == "dense"]
    assert dense[0]["score"] == dense[1]["score"] == json.loads((out / "dense" / "metrics.json").read_text())["student_score"]
    int8 = next(r for r in rows if r["method"] == "dense-int8")
    assert int8["energy_pj"] < dense[0]["energy_pj"] and int8["energy_pj_compute_memory"] < dense[0]["energy_pj_compute_memory"]
    # The QNN at T is the student trained on its T-step quantized map, scored at that map's fixed point.
    for T in (4, 8):
        qnn = next(r for r in rows if r["method"] == "qnn" and r["time_steps"] == T)
        assert qnn["score"] == json.loads((out / f"qnn-T{T}" / "metrics.json").read_text())["student_solve_score"]
    # eqspike's compute energy is the papers' count (metrics.json's ratio, at its T)
    eq4 = next(r for r in rows if r["method"] == "eqspike" and r["time_steps"] == 4)
    assert eq4["energy_pj"] / result["teacher_energy_pj"] == pytest.approx(
        json.loads((out / "eqspike-T4" / "metrics.json").read_text())["student_energy_ratio"], rel=1e-6
    )
    memory = {(r["method"], r["time_steps"]): r["peak_train_mem_mb"] for r in rows}
    # BPTT keeps every step: SpikeLM's memory grows with T, eqspike's does not and stays below it.
    assert memory[("spikelm", 8)] > 1.5 * memory[("spikelm", 4)]
    # eqspike is trained for each T (implicit gradients): the same memory at T = 4 and 8.
    assert memory[("eqspike", 4)] == memory[("eqspike", 8)] < memory[("spikelm", 4)]
    assert "| spikelm | 8 |" in (out / "compare.md").read_text() and (out / "compare.png").stat().st_size > 5_000
    # where the numbers came from: the same record as a run's metrics.json
    run_environment = json.loads((out / "eqspike-T4" / "metrics.json").read_text())["environment"]
    assert result["environment"]["packages"] == run_environment["packages"]
    assert result["environment"]["device_name"] == run_environment["device_name"]
    assert (out / "pareto.png").stat().st_size > 5_000
    trained_for = {T: json.loads((out / f"eqspike-T{T}" / "metrics.json").read_text())["train_for"] for T in (4, 8)}
    assert trained_for == {4: "time_steps", 8: "time_steps"}
    assert json.loads((out / "eqspike-inf" / "metrics.json").read_text())["train_for"] == "infinity"
    # evaluate and diagnose sweep an eqspike student's populations: a SpikeLM run is refused in one line
    capsys.readouterr()
    assert main(["diagnose", str(out / "spikelm-T4")]) == 2
    assert "'eqspike-spikelm-bert' student" in capsys.readouterr().err
    # A second call with the same settings reuses the finished runs instead of training again; one with
    # other settings is refused by name rather than reporting runs it did not ask for.
    same = [
        "compare",
        "--teacher",
        tiny_teacher.path,
        "--train-file",
        str(toy_files[0]),
        "--validation-file",
        str(toy_files[1]),
        "--max-seq-length",
        "32",
        "--device",
        "cpu",
        "--student-layers",
        "2",
        "--batch-size",
        "16",
        "--intermediate-epochs",
        "1",
        "--prediction-epochs",
        "1",
        "--intermediate-lr",
        "1e-3",
        "--prediction-lr",
        "1e-3",
        "--calibration-examples",
        "32",
        "--time-steps",
        "4",
        "--out",
        str(out),
        "--spikelm-reset",
        "soft",
    ]
    capsys.readouterr()
    assert main(same) == 0
    assert "reusing the finished run" in capsys.readouterr().out
    assert main([*same, "--prediction-lr", "5e-4"]) == 2
    # --baselines names what is trained beside eqspike at T: without infinity no T = infinity student is
    # trained or reported
    import eqspike.distill.inputs as inputs_module
    import eqspike.teacher.store as store_module

    loads, read = [], []
    load_teacher, from_pretrained = inputs_module.load_teacher, store_module._from_pretrained
    monkeypatch.setattr(inputs_module, "load_teacher", lambda *a, **k: loads.append(1) or load_teacher(*a, **k))
    monkeypatch.setattr(
        store_module, "_from_pretrained", lambda kind, *a, **k: read.append(kind) or from_pretrained(kind, *a, **k)
    )
    assert main([*same, "--baselines", "ann", "--out", str(tmp_path / "without-infinity")]) == 0
    # the inputs opened once for the two runs trained and their measurement: the teacher and its tokenizer
    assert len(loads) == 1 and read.count("tokenizer") == 1, read
    rows = json.loads((tmp_path / "without-infinity" / "compare.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"eqspike", "dense", "dense-int8", "teacher-int8"}
    assert not (tmp_path / "without-infinity" / "eqspike-inf").exists()
    # --baselines-only: the baselines alone (here the finished dense student, reused), no eqspike at T
    assert main([*same, "--baselines", "ann", "--baselines-only", "--out", str(tmp_path / "without-infinity")]) == 0
    rows = json.loads((tmp_path / "without-infinity" / "compare.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"dense", "dense-int8", "teacher-int8"}
    assert "finished with other settings (prediction_lr)" in capsys.readouterr().err


def test_compare_reports_a_diverging_baseline_instead_of_failing(tiny_teacher, toy_files, tmp_path, capsys):
    """SpikeLM's own membrane update, u_t = 0.25 u_(t-1) (alpha - s) + x_t, grows without bound where
    0.5 alpha > 1: on the tiny teacher it diverges at T = 8. compare says so in its table and keeps the
    other rows."""
    out = tmp_path / "compare"
    code = main(
        [
            "compare",
            "--teacher",
            tiny_teacher.path,
            "--train-file",
            str(toy_files[0]),
            "--validation-file",
            str(toy_files[1]),
            "--max-seq-length",
            "32",
            "--device",
            "cpu",
            "--student-layers",
            "2",
            "--batch-size",
            "16",
            "--intermediate-epochs",
            "1",
            "--prediction-epochs",
            "1",
            "--intermediate-lr",
            "1e-3",
            "--prediction-lr",
            "1e-3",
            "--calibration-examples",
            "32",
            "--time-steps",
            "8",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    rows = {(r["method"], r["time_steps"]): r for r in json.loads((out / "compare.json").read_text())["rows"]}
    assert "training diverged at step" in rows[("spikelm", 8)]["diverged"] and rows[("spikelm", 8)]["score"] is None
    assert rows[("eqspike", 8)]["score"] is not None and "diverged" not in rows[("eqspike", 8)]
    assert "| spikelm | 8 | diverged in training |" in (out / "compare.md").read_text()
    assert "spikelm T=8 diverged" in capsys.readouterr().out


def test_compare_at_spikelm_energy_trains_eqspike_under_that_budget(tiny_teacher, toy_files, tmp_path, capsys):
    """--match-energy: SpikeLM at T is trained and measured first; eqspike at T is trained under an energy
    budget equal to SpikeLM's energy ratio, and its run records that budget."""
    out = tmp_path / "compare"
    code = main(
        [
            "compare",
            "--teacher",
            tiny_teacher.path,
            "--train-file",
            str(toy_files[0]),
            "--validation-file",
            str(toy_files[1]),
            "--max-seq-length",
            "32",
            "--device",
            "cpu",
            "--student-layers",
            "2",
            "--batch-size",
            "16",
            "--intermediate-epochs",
            "1",
            "--prediction-epochs",
            "1",
            "--intermediate-lr",
            "1e-3",
            "--prediction-lr",
            "1e-3",
            "--calibration-examples",
            "32",
            "--time-steps",
            "4",
            "--out",
            str(out),
            "--spikelm-reset",
            "soft",
            "--match-energy",
        ]
    )
    assert code == 0
    result = json.loads((out / "compare.json").read_text())
    rows = {(r["method"], r["time_steps"]): r for r in result["rows"]}
    spikelm_ratio = rows[("spikelm", 4)]["energy_pj"] / result["teacher_energy_pj"]
    budget = result["eqspike_budgets_at_spikelm_energy"]["4"]
    assert budget == pytest.approx(spikelm_ratio, rel=1e-6)
    run = json.loads((out / "eqspike-T4-at-spikelm-energy" / "metrics.json").read_text())
    assert run["energy_budget"] == pytest.approx(budget)
    assert "under an energy budget equal to SpikeLM's energy" in (out / "compare.md").read_text()
    assert f"spends {budget:.3f} of the teacher's energy" in capsys.readouterr().out
