"""Numbers a newcomer reproduces: determinism, the environment record, selection that does not read the
dev set, and results over seeds."""

import json
import math

import pytest
import torch

import eqspike
from eqspike.analysis.seeds import example_flips, flip_difference, paired_differences, seed_summary, spread, spread_ratio
from eqspike.app.cli import main
from eqspike.distill.config import ConfigError, RunConfig
from eqspike.distill.prepare import carve_selection, prepare_data
from eqspike.distill.run_directory import RunDirectoryError
from eqspike.distill.seeds import distill_seeds
from eqspike.distill.trainer import Distiller
from eqspike.runtime.environment import PACKAGES, git_commit
from tests.conftest import QUIET, TINY_TEACHER_RECIPE, tiny_config, write_csv

QUICK = dict(time_steps=4, intermediate_epochs=1, prediction_epochs=1, save_steps=1000)


def _lines(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_the_same_seed_on_the_same_machine_gives_an_identical_run(tiny_teacher, toy_files, tmp_path):
    """Two runs of one config and seed: metrics.json byte for byte, every logged value but the wall
    clock, and the student's weights bit for bit."""
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        Distiller(tiny_config(tiny_teacher, toy_files, run, **QUICK), **QUIET).run()
    a, b = runs
    assert (a / "metrics.json").read_text() == (b / "metrics.json").read_text()
    strip = lambda records: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in records]  # noqa: E731
    assert strip(_lines(a)) == strip(_lines(b))
    wa, wb = (torch.load(run / "checkpoint" / "student.pt") for run in runs)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_metrics_json_records_the_environment(tiny_teacher, toy_files, tmp_path):
    run = tmp_path / "run"
    result = Distiller(tiny_config(tiny_teacher, toy_files, run, **QUICK), **QUIET).run()
    env = result["environment"]
    assert set(env["packages"]) == set(PACKAGES)
    assert env["packages"]["torch"] == torch.__version__ and env["packages"]["eqspike"] == eqspike.__version__
    assert all(env["packages"][name] for name in ("transformers", "datasets", "tokenizers", "torchdeq"))
    assert env["python"].count(".") == 2 and env["device"] == "cpu" and env["device_name"]
    assert env["torch_threads"] == torch.get_num_threads() and env["precision"] == "fp32"
    assert env["git"] == git_commit()  # None outside a checkout
    if env["git"] is not None:
        assert len(env["git"]["commit"]) == 40
    assert result["selection"] == "split"
    card = (run / "student" / "README.md").read_text()
    assert f"torch {torch.__version__}" in card and f"eqspike {eqspike.__version__}" in card


def test_the_environment_is_recorded_when_the_run_starts(tiny_teacher, toy_files, tmp_path, monkeypatch):
    """The record describes the code that trained the run: it is taken before the first step, not when
    metrics.json is written (a commit made while a run trains must not be credited with it)."""
    import eqspike.distill.trainer as trainer

    run = tmp_path / "run"
    log = run / "metrics.jsonl"
    monkeypatch.setattr(
        trainer, "environment_record", lambda *_: {"lines_logged": len(log.read_text().splitlines()) if log.exists() else 0}
    )
    result = Distiller(tiny_config(tiny_teacher, toy_files, run, **QUICK), **QUIET).run()
    assert result["environment"] == {"lines_logged": 0} and len(_lines(run)) > 0


def test_the_commit_is_the_one_the_process_loaded(monkeypatch):
    """Runs of one process (--seeds, compare) ran the code imported at its start: a commit landing
    between two of them is not credited to the second."""
    import eqspike.runtime.environment as environment

    commits = iter([{"commit": "a" * 40, "dirty": False}, {"commit": "b" * 40, "dirty": False}])
    monkeypatch.setattr(environment, "git_commit", lambda: next(commits))
    environment.loaded_code_commit.cache_clear()
    try:
        first, second = environment.environment_record(), environment.environment_record()
    finally:
        environment.loaded_code_commit.cache_clear()
    assert first["git"] == second["git"] == {"commit": "a" * 40, "dirty": False}


def test_the_package_version_is_the_one_installed():
    from importlib import metadata

    assert metadata.version("eqspike") == eqspike.__version__


# ---------------------------------------------------------------------------- selection
def test_the_selection_split_is_seeded_disjoint_and_of_its_fraction():
    examples = list(range(200))
    train, held = carve_selection(examples, 0.1, seed=3)
    assert len(held) == 20 and sorted(train + held) == examples and not set(train) & set(held)
    assert carve_selection(examples, 0.1, seed=3) == (train, held)
    assert carve_selection(examples, 0.1, seed=4)[1] != held
    with pytest.raises(ConfigError, match="leaves no training examples"):
        carve_selection(examples[:3], 0.9, seed=0)
    with pytest.raises(ConfigError, match="selection='test' is not valid"):
        RunConfig(selection="test")


def test_with_a_selection_split_the_dev_labels_do_not_change_the_student_or_teacher(tiny_bert, tiny_teacher, toy_files, tmp_path):
    """The dev set scores only the final student and teacher: with every dev label flipped, the teacher
    fine-tuned here and the student kept are the same bit for bit (only their dev scores change).
    With selection on the dev set (the old behaviour, ``--selection dev``) the flipped labels reach
    the teacher's choice of epoch."""
    import csv

    rows = list(csv.reader(open(toy_files[1])))[1:]
    flipped = write_csv(tmp_path / "flipped.csv", [(text, 1 - int(label)) for text, label in rows])
    results, teachers = {}, {}
    for name, dev in (("dev", toy_files[1]), ("flipped", flipped)):
        # the teacher, fine-tuned from the base model with a held-out selection split
        config = RunConfig(
            teacher=str(tiny_bert),
            train_file=str(toy_files[0]),
            validation_file=str(dev),
            teacher_store=str(tmp_path / f"store-{name}"),
            **TINY_TEACHER_RECIPE,
            max_seq_length=32,
            device="cpu",
        )
        data = prepare_data(config, log=lambda *_: None)
        from eqspike.teacher.store import load_teacher

        torch.manual_seed(0)
        teacher = load_teacher(
            config.teacher_spec(), data.task, torch.device("cpu"), data.splits, data.train, lambda *_: None, data.selection
        )
        assert teacher.card["selection"] == "selection" and teacher.card["selection_score"] is not None
        teachers[name] = (teacher.model.state_dict(), teacher.card)
        # the student of the session's tiny teacher
        run = tmp_path / name
        results[name] = Distiller(tiny_config(tiny_teacher, toy_files, run, validation_file=str(dev), **QUICK), **QUIET).run()
        results[name]["weights"] = torch.load(run / "checkpoint" / "student.pt")
        results[name]["evals"] = [r["eval"] for r in _lines(run) if "eval" in r]
    (wa, ca), (wb, cb) = teachers["dev"], teachers["flipped"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa) and ca["history"] == cb["history"]
    assert ca["dev_score"] + cb["dev_score"] == pytest.approx(1.0)  # flipped binary labels: complementary accuracy
    a, b = results["dev"], results["flipped"]
    assert a["evals"] == b["evals"] and all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"])
    assert a["student_score"] + b["student_score"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------- seeds
def test_spread_by_hand():
    s = spread([1.0, 2.0, 3.0])
    assert s["n"] == 3 and s["mean"] == 2.0 and s["std"] == 1.0 and (s["min"], s["max"]) == (1.0, 3.0)
    half = 4.302652729911275 / math.sqrt(3)  # t_{0.975, 2}
    assert s["ci95"] == pytest.approx([2 - half, 2 + half])
    assert s["pi95"] == pytest.approx([2 - half * 2, 2 + half * 2])  # t s sqrt(1 + 1/3) = 2 t s / sqrt(3)
    assert spread([0.5])["std"] is None and spread([0.5])["ci95"] is None and spread([0.5])["pi95"] is None
    d = paired_differences({1: 0.8, 2: 0.7, 3: 0.9}, {1: 0.7, 2: 0.6, 3: 0.8, 4: 0.1})
    assert d["seeds"] == [1, 2, 3] and d["mean"] == pytest.approx(0.1) and d["std"] == pytest.approx(0.0, abs=1e-12)
    summary = seed_summary({1: {"student_score": 0.5, "teacher_score": 1.0}, 2: {"student_score": 0.7, "teacher_score": 1.0}})
    assert summary["seeds"] == [1, 2] and summary["metrics"]["student_score"]["mean"] == pytest.approx(0.6)


def test_spread_ratio_by_hand():
    a = {1: 1.0, 2: 2.0, 3: 3.0}  # s_a = 1
    b = {1: 2.0, 2: 4.0, 3: 6.0, 9: 0.0}  # s_b = 2 on the common seeds
    r = spread_ratio(a, b)
    assert r["seeds"] == [1, 2, 3] and r["std_ratio"] == pytest.approx(0.5)
    # F = 1/4 on (2, 2) degrees of freedom: cdf = F / (1 + F) = 0.2
    assert r["f_test_p"] == pytest.approx(0.2)
    # b = 2a: a - b = -a and a + b = 3a are perfectly anti-correlated, so the paired test is sure (p = 0)
    assert r["pitman_morgan_p"] < 1e-6
    # equal spreads, shifted: a - b is constant, no evidence either way
    same = spread_ratio(a, {s: v + 1 for s, v in a.items()})
    assert same["std_ratio"] == pytest.approx(1.0) and same["f_test_p"] == pytest.approx(0.5) and same["pitman_morgan_p"] is None
    assert spread_ratio({1: 0.1, 2: 0.2}, {1: 0.3, 2: 0.1})["std_ratio"] is None


def test_example_flips_by_hand():
    """Three seeds, four examples: example 0 always right, 1 always wrong, 2 right on one seed, 3 on two."""
    correct = {1: [1, 0, 1, 1], 2: [1, 0, 0, 1], 3: [1, 0, 0, 0]}
    f = example_flips(correct)
    # v_i = p (1 - p) k / (k - 1) = (1/3)(2/3)(3/2) = 1/3 for examples 2 and 3; 0 for 0 and 1
    assert f["flip_rate"] == pytest.approx(2 * (2 / 3) / 4) and f["unstable_fraction"] == 0.5
    # the flip rate is the mean over pairs of seeds of the fraction of examples they differ on
    pairs = [(1, 2), (1, 3), (2, 3)]
    assert f["flip_rate"] == pytest.approx(sum(sum(x != y for x, y in zip(correct[a], correct[b])) / 4 for a, b in pairs) / 3)
    assert f["flip_floor_std"] == pytest.approx(math.sqrt(2 / 3) / 4)
    assert f["observed_std"] == pytest.approx(spread([0.75, 0.5, 0.25])["std"])
    steady = {1: [1, 0, 1, 1], 2: [1, 0, 1, 1], 3: [1, 0, 1, 1]}
    assert example_flips(steady)["flip_rate"] == 0 and example_flips(steady)["flip_floor_std"] == 0
    d = flip_difference(steady, correct)
    assert d["difference"] == pytest.approx(-f["flip_rate"]) and d["ci95"][0] < d["difference"] < d["ci95"][1]
    with pytest.raises(ValueError, match="at least two seeds"):
        example_flips({1: [1, 0]})
    with pytest.raises(ValueError, match="same examples"):
        example_flips({1: [1, 0], 2: [1]})


@pytest.mark.slow
def test_distill_seeds_trains_one_student_per_seed_and_summarises_them(tiny_teacher, toy_files, tmp_path, capsys):
    out = tmp_path / "seeds"
    args = [
        "distill",
        "--teacher",
        tiny_teacher.path,
        "--train-file",
        str(toy_files[0]),
        "--validation-file",
        str(toy_files[1]),
        "--max-seq-length",
        "32",
        "--student-layers",
        "2",
        "--batch-size",
        "16",
        "--intermediate-epochs",
        "1",
        "--prediction-epochs",
        "1",
        "--time-steps",
        "4",
        "--calibration-examples",
        "32",
        "--device",
        "cpu",
        "--output-dir",
        str(out),
        "--seeds",
        "3",
        "5",
    ]
    assert main(args) == 0
    summary = json.loads((out / "seeds.json").read_text())
    scores = {s: json.loads((out / f"seed-{s}" / "metrics.json").read_text())["student_score"] for s in (3, 5)}
    assert summary["seeds"] == [3, 5] and summary["metrics"]["student_score"]["values"] == [scores[3], scores[5]]
    assert summary["metrics"]["student_energy_ratio"]["n"] == 2 and summary["environment"]["packages"]["torch"]
    assert "| student (spiking) |" in (out / "seeds.md").read_text()
    assert (out / "seeds.csv").read_text().splitlines()[0] == "metric,n,mean,std,min,max,ci95_low,ci95_high,pi95_low,pi95_high"
    # --resume reuses the finished seeds; other settings are refused by name.
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    assert capsys.readouterr().out.count("reusing the finished run") == 2
    assert main([*args, "--resume", "--prediction-lr", "1e-3"]) == 2
    assert "finished with other settings (prediction_lr)" in capsys.readouterr().err
    with pytest.raises(RunDirectoryError, match="names a seed twice"):
        distill_seeds(RunConfig(output_dir=str(out)), [1, 1])


def test_compare_seeds_pairs_each_method_with_spikelm_on_the_same_seed(monkeypatch, tmp_path):
    """The paired difference is taken seed by seed: a method 0.02 above SpikeLM on every seed has a
    difference of 0.02 with no spread, however much the seeds themselves differ."""
    import eqspike.app.compare as comparing

    def fake_compare(config, time_steps, out_dir, log, **_):
        base = {42: 0.60, 43: 0.80}[config.seed]
        rows = [
            {"method": "spikelm", "time_steps": 4, "score": base, "energy_pj": 20.0},
            {"method": "eqspike", "time_steps": 4, "score": base + 0.02, "energy_pj": 10.0},
            {"method": "eqspike-inf", "time_steps": 4, "score": None, "energy_pj": None},  # diverged
            {"method": "dense", "time_steps": 4, "score": base + 0.05, "energy_pj": 50.0},
            {"method": "qnn", "time_steps": 4, "score": base + 0.01, "energy_pj": 30.0},
        ]
        return {
            "task": "toy",
            "metric": "accuracy",
            "teacher_score": 0.9,
            "teacher_energy_pj": 100.0,
            "rows": rows,
            "environment": {"seed": config.seed},
        }

    monkeypatch.setattr(comparing, "compare", fake_compare)
    tmp_path.mkdir(exist_ok=True)
    summary = comparing.compare_seeds(RunConfig(), [4], tmp_path, [42, 43], log=lambda *_: None)
    row = next(r for r in summary["rows"] if r["method"] == "eqspike")
    assert row["score"]["std"] == pytest.approx(math.sqrt(0.02))
    assert row["score_minus_spikelm"]["mean"] == pytest.approx(0.02) and row["score_minus_spikelm"]["std"] == pytest.approx(0)
    assert row["energy_ratio_minus_spikelm"]["mean"] == pytest.approx(-0.1)
    # and against the dense student of the same seed: the spikes' own cost
    assert row["score_minus_dense"]["mean"] == pytest.approx(-0.03) and row["score_minus_dense"]["std"] == pytest.approx(0)
    assert next(r for r in summary["rows"] if r["method"] == "dense")["score_minus_spikelm"]["mean"] == pytest.approx(0.05)
    # and against the QNN of the same seed (the quantized network of the same T)
    assert row["score_minus_qnn"]["mean"] == pytest.approx(0.01) and row["score_minus_qnn"]["std"] == pytest.approx(0)
    dense = next(r for r in summary["rows"] if r["method"] == "dense")
    assert dense["score_minus_eqspike"]["mean"] == pytest.approx(0.03) and "score_minus_dense" not in dense
    assert next(r for r in summary["rows"] if r["method"] == "eqspike-inf")["score"] is None
    assert "| eqspike | 4 |" in (tmp_path / "compare_seeds.md").read_text()
    assert summary["environment"] == {"42": {"seed": 42}, "43": {"seed": 43}}  # each seed's record, kept
