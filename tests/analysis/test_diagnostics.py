import json

import pytest
import torch

from eqspike.app.cli import main
from eqspike.core.neurons import NeuronConfig
from eqspike.core.rate_map import Population, RateMap
from eqspike.core.simulation import simulate
from eqspike.distill.config import RunConfig
from eqspike.distill.trainer import Distiller
from eqspike.students.energy import bert_macs, synaptic_accumulates


@pytest.fixture(scope="module")
def tiny_run(tiny_teacher, toy_files, tmp_path_factory):
    run = tmp_path_factory.mktemp("diag") / "run"
    Distiller(
        RunConfig(
            teacher=tiny_teacher.path,
            train_file=str(toy_files[0]),
            validation_file=str(toy_files[1]),
            max_seq_length=32,
            student_layers=2,
            batch_size=16,
            intermediate_epochs=1,
            prediction_epochs=1,
            intermediate_lr=1e-3,
            prediction_lr=1e-3,
            time_steps=16,
            calibration_examples=32,
            output_dir=str(run),
            device="cpu",
        ),
        log=lambda *_: None,
    ).run()
    return run


def test_energy_counts_match_a_hand_count_on_two_populations():
    current = torch.tensor([[0.5, 1.0, -0.25, 0.0]])  # IF neurons fire every 2nd, every, every 4th (-), never
    weight = torch.randn(3, 4)
    rate_map = RateMap(
        [Population("a", (), lambda: current), Population("b", ("a",), lambda a: a @ weight.T)],
        NeuronConfig(threshold=1.0, signed=True),
    )
    result = simulate(rate_map, 8)
    assert result.spike_counts["a"].tolist() == [[4.0, 8.0, 2.0, 0.0]]
    # Each spike of 'a' reaches the 3 neurons of 'b': (4 + 8 + 2 + 0) * 3 accumulates; 'b' drives nothing.
    accumulates = synaptic_accumulates(result.spike_counts, {"a": 3})
    assert accumulates.tolist() == [42.0]


def test_dense_bert_mac_count_by_hand():
    # hidden 2, intermediate 4, 1 head, 1 layer, 2 labels, 3 tokens:
    # projections 3*(4*2*2 + 2*2*4) = 96; QK^T and PV 2*3*3*2 = 36; scores 1*9*(1+3) = 36;
    # two LayerNorms 2*3*2*5 = 60; GELU 3*4*4 = 48; embedding LayerNorm 3*2*5 = 30; pooler 4; classifier 4
    assert bert_macs(2, 4, 1, 1, 2, 3) == 96 + 36 + 36 + 60 + 48 + 30 + 4 + 4


def test_diagnose_writes_the_report_and_rates_converge(tiny_run, capsys):
    out = tiny_run / "diag_out"
    assert main(["diagnose", str(tiny_run), "--time-steps", "2", "8", "32", "128", "--out", str(out)]) == 0
    data = json.loads((out / "diagnostics.json").read_text())
    assert {"time_steps", "mean_rate_error", "score_vs_T", "populations", "energy", "residual", "spectral_radius"} <= set(data)
    assert data["time_steps"] == [2, 8, 32, 128] and len(data["mean_rate_error"]) == 4 and len(data["score_vs_T"]) == 4
    assert set(data["energy"]) >= {"snn_pj", "ann_pj", "ratio", "accumulates", "macs"}
    assert data["energy"]["ratio"] == pytest.approx(data["energy"]["snn_pj"] / data["energy"]["ann_pj"])
    assert data["spectral_radius"] is None  # no feedback
    assert len(data["populations"]) == 1 + 2 * 6
    for population in data["populations"]:
        assert set(population) >= {
            "name",
            "rate_error",
            "firing_rate",
            "silent_frac",
            "saturated_frac",
            "firing_vs_T",
            "silent_vs_T",
            "saturated_vs_T",
            "lag_vs_T",
            "mismatch_vs_T",
        }
        assert population["rate_error"][3] <= 0.25 * population["rate_error"][1], population  # T=128 vs T=8
        assert 0 <= population["silent_frac"] <= 1 and 0 <= population["firing_rate"] <= 1
        assert population["silent_vs_T"][-1] == population["silent_frac"] and len(population["lag_vs_T"]) == 4
        assert all(0 <= x <= 1 for x in population["lag_vs_T"] + population["mismatch_vs_T"])
    # the constant-current population is the T-step quantizer exactly: it never lags, at any T
    embeddings = data["populations"][0]
    assert embeddings["name"] == "embeddings" and embeddings["lag_vs_T"] == [0.0] * 4 == embeddings["mismatch_vs_T"]
    assert len(data["quantized_score_vs_T"]) == 4 and len(data["lag_vs_T"]) == 4
    for name in ("rate_error.png", "score_vs_T.png", "firing_rate.png"):
        assert (out / name).stat().st_size > 10_000
    assert "block1.intermediate" in capsys.readouterr().out  # the table


def test_evaluate_scores_the_network_run_for_t_steps(tiny_run, capsys):
    """`eqspike evaluate`'s score at T is the accuracy of the student's own T-step simulation on the
    dev set, computed here batch by batch without the diagnostics' sweep."""
    assert main(["evaluate", str(tiny_run), "--time-steps", "2", "8"]) == 0
    rows = json.loads((tiny_run / "evaluate.json").read_text())["rows"][-2:]  # this evaluation's
    from eqspike.app.trained import _load_run
    from eqspike.data.batches import sequential_batches

    _, student, task, splits, device, _ = _load_run(tiny_run, None, "cpu")
    for row in rows:
        correct = total = 0
        for batch in sequential_batches(splits[task.main_split], 16):
            batch.pop("index")
            labels = batch.pop("labels")
            with torch.no_grad():
                logits = student(**batch, mode="simulate", time_steps=row["time_steps"]).logits
            correct += int((logits.argmax(-1) == labels).sum())
            total += len(labels)
        assert row["score"] == pytest.approx(correct / total, abs=1e-12)


def test_diagnose_with_feedback_reports_a_spectral_radius(tiny_teacher, toy_files, tmp_path):
    from eqspike.analysis.diagnostics import diagnose
    from eqspike.data.batches import EncodedSplit
    from eqspike.data.tasks import load_task_data
    from eqspike.students.spiking_bert import SpikingBertForSequenceClassification

    student = SpikingBertForSequenceClassification.from_teacher(tiny_teacher.model, 2, feedback=True)
    with torch.no_grad():
        student.feedback.weight.normal_(std=0.05)
    task = load_task_data(train_file=toy_files[0], validation_file=toy_files[1])
    split = EncodedSplit(task.validation["validation"][:16], tiny_teacher.tokenizer, 32)
    report = diagnose(student, task, split, [4, 16], batch_size=16)
    assert report.spectral_radius is not None and 0 < report.spectral_radius < 1
    assert report.solver_iterations > 1 and report.residual < 1e-3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--time-steps", "0", "8"], "argument --time-steps: 0 is not valid; it must be an integer >= 1"),
    ],
)
def test_diagnose_bad_time_steps(tiny_run, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:  # refused by the parser, before the run is read
        main(["diagnose", str(tiny_run), *args])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_diagnose_refuses_what_is_not_a_run(tmp_path, capsys):
    assert main(["diagnose", str(tmp_path)]) == 2
    assert "is not an eqspike run directory" in capsys.readouterr().err


def test_diagnose_when_the_task_data_is_gone(tiny_run, tmp_path, capsys):
    import shutil

    import yaml

    moved = tmp_path / "moved_run"
    shutil.copytree(tiny_run, moved)
    config = yaml.safe_load((moved / "config.yaml").read_text())
    config["validation_file"] = str(tmp_path / "gone.csv")
    (moved / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["diagnose", str(moved)]) == 2
    assert "gone.csv does not exist" in capsys.readouterr().err


def test_diagnose_attribution_writes_where_the_points_go(tiny_run, tiny_teacher, toy_files, tmp_path, capsys):
    from tests.conftest import QUIET, tiny_config

    dense = tmp_path / "dense"
    dense_score = Distiller(
        tiny_config(tiny_teacher, toy_files, dense, student_type="dense", prediction_epochs=1), **QUIET
    ).run()["student_score"]
    out = tmp_path / "diag"
    assert (
        main(
            [
                "diagnose",
                str(tiny_run),
                "--time-steps",
                "2",
                "4",
                "32",
                "--attribution",
                "clipped",
                "dense",
                "--dense-run",
                str(dense),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    data = json.loads((out / "attribution.json").read_text())
    assert data["time_steps"] == [2, 4]  # the T <= 16 of those asked for
    assert data["reference"]["dense student"] == dense_score and "teacher" in data["reference"]
    assert all(len(p["distance_to_dense"]) == 2 for p in data["populations"])  # compared with its activations
    diagnostics = json.loads((out / "diagnostics.json").read_text())
    assert data["spiking_score"] == diagnostics["score_vs_T"][:2]
    assert set(data["recovered"]["head population"]) == {"clipped", "dense"}
    assert (out / "attribution.png").stat().st_size > 10_000
    assert "| head population |" in (out / "attribution.md").read_text()
    assert f"dense student {dense_score:.4f}" in capsys.readouterr().out


def test_diagnose_checks_the_dense_run_before_the_work(tiny_run, tmp_path, capsys):
    assert main(["diagnose", str(tiny_run), "--attribution", "--dense-run", str(tiny_run), "--out", str(tmp_path)]) == 2
    assert "not a finished run of a dense student" in capsys.readouterr().err
    assert not (tmp_path / "diagnostics.json").exists()
    assert main(["diagnose", str(tiny_run), "--dense-run", str(tiny_run), "--out", str(tmp_path)]) == 2
    assert "pass --attribution with it" in capsys.readouterr().err
