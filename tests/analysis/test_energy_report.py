"""`eqspike energy`: the inventory counted by hand on toys, the two conventions, the baselines, the
break-even firing rate, and the reduction to the papers' number (`student_energy_ratio`)."""

from __future__ import annotations

import json
import math

import pytest

from eqspike.analysis.energy import Hardware, Op, break_even_firing_rate, dense_inventory, price, spiking_inventory
from eqspike.analysis.energy_report import qnn_activation_bits, spike_bits
from eqspike.app.cli import main
from eqspike.students.energy import ACCUMULATE_PJ, MAC_PJ, StudentEnergy, bert_macs, student_macs
from tests.app.test_bad_input import distill_args, refused

TOY = StudentEnergy(hidden=2, intermediate=4, heads=1, layers=1, labels=3, teacher_layers=2)


def test_the_default_table_is_horowitz_and_a_profile_is_checked(tmp_path):
    hw = Hardware()
    assert hw.add("fp32") == ACCUMULATE_PJ and hw.mac("fp32") == MAC_PJ and hw.mac("int8") == pytest.approx(0.23)
    assert hw.bit_pj == 20.0 / 64  # a 64-bit read of a 32 KB SRAM
    with pytest.raises(ValueError, match="memory_kb=64.0 has no read energy"):
        Hardware(memory_kb=64.0)
    with pytest.raises(ValueError, match="no multiply-accumulate energy for 'int4'"):
        hw.mac("int4")
    profile = tmp_path / "hw.yaml"
    profile.write_text("name: small\nmemory_kb: 8\nmemory_pj_per_64_bits: {8: 6.4}\n")
    assert Hardware.from_yaml(profile).bit_pj == pytest.approx(0.1)
    profile.write_text("nmae: typo\n")
    with pytest.raises(ValueError, match=r"unknown hardware fields \['nmae'\]"):
        Hardware.from_yaml(profile)


def test_a_dense_network_at_fp32_costs_what_the_papers_count_and_int8_is_cheaper():
    lengths = [3.0, 5.0]
    fp32 = dense_inventory(TOY, 2, lengths)
    papers = MAC_PJ * sum(bert_macs(2, 4, 1, 2, 3, n) for n in lengths) / 2
    assert price(fp32, Hardware(), "compute") == pytest.approx(papers, rel=1e-12)
    int8 = dense_inventory(TOY, 2, lengths, 8, 8, "int8")
    # only the matmuls change format: L (4 H^2 + 2 H I) + 2 L^2 H per layer, at 0.23 instead of 4.6 pJ
    matmuls = sum(2 * (n * (4 * 4 + 2 * 2 * 4) + 2 * n * n * 2) for n in lengths) / 2
    assert price(fp32, Hardware(), "compute") - price(int8, Hardware(), "compute") == pytest.approx(matmuls * (4.6 - 0.23))
    # memory, by hand at length 3 for one block: weights (4 H^2 + 2 H I + H^2 + H labels) bits, activations
    # 2 bits (8 L H + 2 L I + 2 h L^2), embedding rows 3 L H x 32
    one = dense_inventory(TOY, 1, [3.0], 8, 8, "int8")
    bits = (32 + 4 + 6) * 8 + 2 * 8 * (48 + 24 + 18) + 3 * 3 * 2 * 32
    assert price(one, Hardware(), "compute_memory") - price(one, Hardware(), "compute") == pytest.approx(bits * 20 / 64)


def _toy_student(weight_bits: float = 32, access: str = "per_spike") -> list[Op]:
    # one example of 3 tokens, T = 2: two populations, 10 and 4 unit spikes, 30 and 12 accumulates, 6 neurons each
    return spiking_inventory(
        TOY,
        [3.0],
        2,
        spikes={"embeddings": 10, "block0.key": 4},
        accumulates={"embeddings": 30, "block0.key": 12},
        neurons={"embeddings": 6, "block0.key": 6},
        spike_bits={"embeddings": 2, "block0.key": 2},
        weight_bits=weight_bits,
        access=access,
    )


def test_the_spiking_inventory_by_hand():
    hw = Hardware()
    ops = _toy_student()
    macs = student_macs(2, 4, 1, 1, 3, 3.0, 2)
    assert price(ops, hw, "compute") == pytest.approx(0.9 * 42 + 4.6 * macs)  # the papers' convention
    extra = {op.part: op.count for op in ops if op.convention == "compute_memory"}
    assert extra["membrane add and compare"] == 2 * 2 * 12  # two ops per neuron and step
    assert extra["membrane subtract per spike"] == 14
    assert extra["spikes written and read"] == 2 * 2 * 12 * 2  # 2 bits, written and read, per neuron and step
    assert extra["membrane state read and written"] == 2 * 2 * 12 * 32
    assert extra["synaptic weights read"] == 30 * 32  # the key's operands are not weights:
    assert extra["key/value operands read"] == 12 * 32
    memory = sum(count for part, count in extra.items() if not part.startswith("membrane ") or "state" in part)
    arithmetic = 0.9 * (48 + 14)
    assert price(ops, hw, "compute_memory") - price(ops, hw, "compute") == pytest.approx(arithmetic + memory * 20 / 64)
    # weight-stationary: the block's weights read once instead of per spike
    stationary = {op.part: op.count for op in _toy_student(access="weight_stationary")}
    assert stationary["synaptic weights read"] == (4 * 4 + 2 * 2 * 4) * 32


def test_ternary_weights_show_in_energy():
    """1.58-bit weights: accumulates into a 16-bit integer membrane (0.05 instead of 0.9 pJ), weights read
    at 1.58 bits: the same spikes cost less under both conventions."""
    hw = Hardware()
    full, ternary = _toy_student(32), _toy_student(1.58)
    for convention in ("compute", "compute_memory"):
        assert price(ternary, hw, convention) < price(full, hw, convention)
    accumulates = lambda ops: sum(op.pj(hw) for op in ops if op.part.endswith("accumulates"))  # noqa: E731
    assert accumulates(ternary) == pytest.approx(42 * 0.05) and accumulates(full) == pytest.approx(42 * 0.9)


def test_break_even_firing_rate_is_where_the_energies_meet():
    hw = Hardware()
    ops = _toy_student()
    rate = 14 / (12 * 2)
    fixed = price([op for op in ops if not op.per_spike], hw, "compute")
    baseline = fixed + 100.0
    r = break_even_firing_rate(ops, rate, baseline, hw, "compute")
    scaled = [
        Op(op.part, op.kind, op.count * (r / rate if op.per_spike else 1), op.fmt, op.convention, op.per_spike) for op in ops
    ]
    assert price(scaled, hw, "compute") == pytest.approx(baseline)
    assert break_even_firing_rate(ops, rate, fixed * 0.5, hw, "compute") is None  # even silent it costs more


def test_bits_of_a_spike_and_of_the_quantized_network():
    assert [spike_bits(1, False), spike_bits(1, True), spike_bits(2, True)] == [1, 2, 3]
    assert [qnn_activation_bits(t, True) for t in (2, 4, 8)] == [3, 4, 5]
    assert qnn_activation_bits(4, False) == math.ceil(math.log2(5))


@pytest.fixture
def energy_run(tiny_teacher, toy_files, tmp_path):
    run = tmp_path / "run"
    assert (
        main(
            [
                str(a)
                for a in distill_args(
                    tiny_teacher.path,
                    *toy_files,
                    run,
                    "--batch-size",
                    32,
                    "--time-steps",
                    4,
                    "--intermediate-epochs",
                    1,
                    "--prediction-epochs",
                    1,
                    "--calibration-examples",
                    16,
                )
            ]
        )
        == 0
    )
    return run


def test_eqspike_energy_writes_both_conventions_and_reduces_to_the_papers_number(energy_run, capsys):
    assert main(["energy", str(energy_run), "--time-steps", "2", "4", "--device", "cpu"]) == 0
    report = json.loads((energy_run / "energy" / "energy.json").read_text())
    assert {p.name for p in (energy_run / "energy").iterdir()} == {"energy.json", "report.md", "energy.png"}
    at = {row["time_steps"]: row for row in report["rows"]}
    metrics = json.loads((energy_run / "metrics.json").read_text())
    # compute, against the FP32 teacher, is the papers' number: evaluate's energy ratio at every T (the
    # same simulation), and at the run's T metrics.json's (distill sums its spikes in float32)
    assert main(["evaluate", str(energy_run), "--time-steps", "2", "4", "--device", "cpu"]) == 0
    for row in json.loads((energy_run / "evaluate.json").read_text())["rows"]:
        mine = at[row["time_steps"]]
        assert mine["conventions"]["compute"]["ratio"]["teacher_fp32"] == pytest.approx(row["energy_ratio"], rel=1e-12)
        assert mine["score"] == row["score"]
    assert at[4]["conventions"]["compute"]["ratio"]["teacher_fp32"] == pytest.approx(metrics["student_energy_ratio"], rel=1e-6)
    # metrics.json also records the strict convention and the INT8 depth-matched dense student
    memory = at[4]["conventions"]["compute_memory"]
    assert metrics["student_energy_ratio_compute_memory"] == pytest.approx(memory["ratio"]["teacher_fp32"], rel=1e-6)
    assert metrics["student_energy_ratio_dense_student_int8"]["compute_memory"] == pytest.approx(
        memory["ratio"]["dense_student_int8"], rel=1e-6
    )
    card = (energy_run / "student" / "README.md").read_text()
    assert f"the student costs {metrics['student_energy_ratio_compute_memory']:.3f} of the teacher" in card
    for row in report["rows"]:
        for convention in ("compute", "compute_memory"):
            c = row["conventions"][convention]
            assert (
                set(c["baselines_uj"])
                == set(c["break_even_firing_rate"])
                == {"teacher_fp32", "teacher_fp16", "teacher_int8", "dense_student_fp32", "dense_student_int8", "qnn"}
            )
            assert c["baselines_uj"]["teacher_int8"] < c["baselines_uj"]["teacher_fp16"] < c["baselines_uj"]["teacher_fp32"]
        assert row["conventions"]["compute_memory"]["student_uj"] > row["conventions"]["compute"]["student_uj"]
    assert "Break-even firing rate" in capsys.readouterr().out
    assert "--hardware nowhere.yaml: no such file" in refused(capsys, "energy", energy_run, "--hardware", "nowhere.yaml")


def test_eqspike_energy_counts_a_spikelm_student_and_refuses_a_dense_one(tiny_teacher, toy_files, tmp_path, capsys):
    """A SpikeLM run: its `compute` ratio is the energy its own count gave (metrics.json); it runs only at
    its T. A dense student fires no spikes: refused by name, before the data is read."""
    runs = {}
    for kind in ("spikelm", "dense"):
        runs[kind] = tmp_path / kind
        assert (
            main(
                [
                    str(a)
                    for a in distill_args(
                        tiny_teacher.path,
                        *toy_files,
                        runs[kind],
                        "--batch-size",
                        32,
                        "--student-type",
                        kind,
                        "--time-steps",
                        2,
                        "--spikelm-time-steps",
                        2,
                        "--intermediate-epochs",
                        1,
                        "--prediction-epochs",
                        1,
                    )
                ]
            )
            == 0
        )
    assert main(["energy", str(runs["spikelm"]), "--device", "cpu"]) == 0
    report = json.loads((runs["spikelm"] / "energy" / "energy.json").read_text())
    metrics = json.loads((runs["spikelm"] / "metrics.json").read_text())
    [row] = report["rows"]
    assert row["time_steps"] == 2 and row["score"] == pytest.approx(metrics["student_score"])
    assert row["conventions"]["compute"]["ratio"]["teacher_fp32"] == pytest.approx(metrics["student_energy_ratio"], rel=1e-6)
    assert row["conventions"]["compute_memory"]["student_uj"] > row["conventions"]["compute"]["student_uj"]
    assert "runs only at the T it was trained for (2)" in refused(capsys, "energy", runs["spikelm"], "--time-steps", "4")
    err = refused(capsys, "energy", runs["dense"], "--device", "cpu")
    assert f"energy: {runs['dense']} holds a 'eqspike-dense-bert' student, which fires no spikes" in err


def test_compare_refuses_an_unknown_baseline_before_any_work(tiny_teacher, toy_files, tmp_path, capsys):
    args = [
        "compare",
        "--teacher",
        tiny_teacher.path,
        "--train-file",
        toy_files[0],
        "--validation-file",
        toy_files[1],
        "--out",
        tmp_path / "compare",
        "--device",
        "cpu",
    ]
    err = refused(capsys, *args, "--baselines", "ann,int4")
    assert "--baselines ann,int4: 'int4' is not a baseline; choose from ann, qnn, spikelm" in err
    assert "keep spikelm in --baselines" in refused(capsys, *args, "--baselines", "ann", "--match-energy")
    assert not (tmp_path / "compare").exists()
