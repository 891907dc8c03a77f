import importlib.util
import json
from pathlib import Path

import pytest
import torch

from eqspike.analysis.benchmarking import peak_memory_mb, seconds_per_call
from eqspike.app.cli import main

ROOT = Path(__file__).resolve().parents[2]


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peak_memory_counts_live_tensors():
    def step():
        a = torch.ones(1024, 1024)  # 4 MiB
        b = a * 2  # 4 MiB, both alive: 8 MiB
        del a
        c = b + 1  # b and c alive: 8 MiB
        return c.sum()

    assert peak_memory_mb(step) == pytest.approx(8.0, rel=0.01)
    assert peak_memory_mb(lambda: torch.ones(256, 1024).sum()) == pytest.approx(1.0, rel=0.01)


def test_peak_memory_leaves_first_call_allocations_to_the_warm_up():
    kept, resets = [], []

    def step():
        if not kept:
            kept.append(torch.ones(1024, 1024))  # 4 MiB kept for good by the first call (a workspace)
        return torch.ones(256, 1024).sum()  # 1 MiB while the call runs

    assert peak_memory_mb(step, warmup=0) == pytest.approx(5.0, rel=0.01)
    kept.clear()
    assert peak_memory_mb(step, reset=lambda: resets.append(1)) == pytest.approx(1.0, rel=0.01)
    assert len(resets) == 2  # before the warm-up call and before the measured one


def test_seconds_per_call_is_the_median_of_the_timed_calls(monkeypatch):
    """The warm-up calls are not timed; the result is the median of the ``repeats`` timed ones."""
    from eqspike.analysis import benchmarking

    clock = iter([0.0, 3.0, 10.0, 11.0, 20.0, 22.0])  # start, stop of each timed call: 3 s, 1 s, 2 s
    monkeypatch.setattr(benchmarking.time, "perf_counter", lambda: next(clock))
    calls = []
    assert seconds_per_call(lambda: calls.append(1), repeats=3, warmup=2) == 2.0
    assert len(calls) == 5


def test_equilibrium_benchmark_writes_exactly_the_documented_keys(tmp_path):
    bench = load_benchmark("bench_equilibrium")
    out = tmp_path / "bench.json"
    bench.main(["--out", str(out), "--time-steps", "2", "8", "--width", "16", "--batch", "2", "--tokens", "4", "--repeats", "1"])
    data = json.loads(out.read_text())
    assert set(data) == {"time_steps", "ift_peak_mem_mb", "bptt_peak_mem_mb", "ift_step_s", "bptt_step_s", "grad_rel_err"}
    assert data["time_steps"] == [2, 8]
    assert data["ift_peak_mem_mb"][0] == pytest.approx(data["ift_peak_mem_mb"][1], rel=0.05)
    assert data["bptt_peak_mem_mb"][1] > 2 * data["bptt_peak_mem_mb"][0]
    assert data["grad_rel_err"] < 1e-4


def test_benchmark_refuses_non_positive_time_steps(tmp_path, capsys):
    bench = load_benchmark("bench_equilibrium")
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--out", str(tmp_path / "b.json"), "--time-steps", "0", "4"])
    assert exit_info.value.code == 2
    assert "--time-steps must be positive integers; got [0]" in capsys.readouterr().err


def test_cli_selfcheck_passes(capsys):
    assert main(["selfcheck"]) == 0
    out = capsys.readouterr().out
    assert "6 passed, 0 failed" in out


def test_cli_unknown_command_lists_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["distil"])
    assert exit_info.value.code == 2
    assert (
        "invalid choice: 'distil' (choose from 'teacher', 'distill', 'evaluate', 'compare', 'diagnose', 'energy', 'predict', 'selfcheck')"
        in capsys.readouterr().err
    )


def test_training_benchmark_writes_rows_for_every_method(tmp_path):
    bench = load_benchmark("bench_train")
    out = tmp_path / "train.json"
    result = bench.main(
        [
            "--out",
            str(out),
            "--layers",
            "2",
            "--hidden",
            "32",
            "--heads",
            "4",
            "--intermediate",
            "64",
            "--seq",
            "8",
            "--batch",
            "2",
            "--simulate-steps",
            "4",
            "--reference-steps",
            "8",
            "--repeats",
            "1",
            "--inference-repeats",
            "1",
            "--inference-steps",
            "2",
            "4",
        ]
    )
    data = json.loads(out.read_text())
    assert data["rows"] == result["rows"]
    assert [r["method"] for r in data["rows"]] == [
        "ann",
        "eqspike_solve",
        "eqspike_solve_T",
        "eqspike_simulate_T",
        "eqspike_simulate",
        "reference",
        "spikelm_bptt",
    ]
    for row in data["rows"]:
        assert set(row) == {"method", "step_s", "peak_mem_mb"} and row["step_s"] > 0 and row["peak_mem_mb"] > 0
    assert [r["time_steps"] for r in data["inference"]] == [2, 4] and all(r["overhead"] > 0 for r in data["inference"])


def test_sweep_until_stops_at_the_named_population():
    from eqspike.core.checks import StackedSpikingNetwork

    net = StackedSpikingNetwork(8, 4)
    rate_map = net.rate_map(torch.randn(2, 8))
    partial = rate_map.sweep_until("p1")
    assert list(partial) == ["p0", "p1"]
    assert torch.equal(partial["p1"], rate_map.sweep()["p1"])
    with pytest.raises(ValueError, match="'p9' is not a population"):
        rate_map.sweep_until("p9")


def test_every_flag_of_every_command_explains_itself():
    """--help: each flag has a one-line description; every setting flag names its default."""
    import argparse

    from eqspike.app.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(commands.choices) == {"teacher", "distill", "evaluate", "compare", "diagnose", "energy", "predict", "selfcheck"}
    for name, command in commands.choices.items():
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, (name, action.dest)
            if name in ("teacher", "distill") and action.dest != "config":
                assert "(default: " in action.help, (name, action.dest)


def test_teacher_benchmark_compares_the_recipes_on_a_csv_task(tiny_bert, toy_files, tmp_path):
    """bench_teacher on a CSV task: one row per recipe and seed with its per-epoch history; the default recipe
    keeps its best dev epoch and stops after `teacher_patience` epochs without a better one."""
    import shutil

    bench = load_benchmark("bench_teacher")
    (tmp_path / "data" / "toy").mkdir(parents=True)
    shutil.copy(toy_files[0], tmp_path / "data" / "toy" / "train.csv")
    shutil.copy(toy_files[1], tmp_path / "data" / "toy" / "validation.csv")
    out = tmp_path / "teacher.json"
    result = bench.main(
        [
            "--out",
            str(out),
            "--teacher",
            str(tiny_bert),
            "--tasks",
            "toy",
            "--data-root",
            str(tmp_path / "data"),
            "--recipes",
            "plain",
            "default",
            "--max-seq-length",
            "32",
            "--seeds",
            "7",
            "7",
        ]
    )
    all_rows = json.loads(out.read_text())["rows"]
    assert result["rows"] == all_rows and len(all_rows) == 4
    # the seed is set before each model is loaded: the same seed twice gives the same run
    for recipe in ("plain", "default"):
        first, second = [r for r in all_rows if r["recipe"] == recipe]
        assert first["history"] == second["history"] and first["seed"] == 7
    rows = {r["recipe"]: r for r in all_rows}
    assert rows.keys() == {"plain", "default"}
    assert rows["plain"]["epochs"] == 3 and rows["plain"]["score"] == rows["plain"]["history"][-1]
    default = rows["default"]
    assert default["score"] == max(default["history"])
    best = default["history"].index(default["score"])
    assert default["epochs"] == 10 or default["epochs"] - 1 - best >= 2


@pytest.mark.slow
def test_spread_benchmark_pairs_each_variant_with_the_baseline_by_seed(tiny_teacher, toy_files, tmp_path, capsys):
    """bench_spread: one row per variant with its spread over seeds, the variants' per-seed differences to the
    baseline (paired), and the baseline's runs reused when a variant is added later."""
    import yaml

    bench = load_benchmark("bench_spread")
    config = tmp_path / "tiny.yaml"
    config.write_text(
        yaml.safe_dump(
            dict(
                teacher=tiny_teacher.path,
                train_file=str(toy_files[0]),
                validation_file=str(toy_files[1]),
                max_seq_length=32,
                student_layers=2,
                batch_size=16,
                eval_batch_size=32,
                intermediate_epochs=1,
                prediction_epochs=1,
                intermediate_lr=1e-3,
                prediction_lr=1e-3,
                time_steps=4,
                calibration_examples=32,
                evals_per_epoch=2,
                device="cpu",
            )
        )
    )
    out, results = tmp_path / "spread", tmp_path / "spread.json"
    assert (
        bench.main(
            [
                "--config",
                str(config),
                "--seeds",
                "1",
                "2",
                "--out",
                str(out),
                "--results",
                str(results),
                "--set",
                "evals_per_epoch=3,data_seed=7",
            ]
        )
        == 0
    )
    first = json.loads(results.read_text())
    assert [r["variant"] for r in first["rows"]] == ["baseline"]
    capsys.readouterr()
    assert (
        bench.main(
            [
                "--config",
                str(config),
                "--seeds",
                "1",
                "2",
                "--variant",
                "ema:ema_decay=0.5",
                "--out",
                str(out),
                "--results",
                str(results),
                "--set",
                "evals_per_epoch=3,data_seed=7",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.count("reusing the finished run") == 2  # the baseline's two seeds
    rows = {r["variant"]: r for r in json.loads(results.read_text())["rows"]}
    assert rows["ema"]["changes"] == {"ema_decay": 0.5} and rows["baseline"] == first["rows"][0]
    diff = rows["ema"]["student_score_minus_baseline"]
    assert diff["seeds"] == [1, 2]
    assert diff["values"] == [
        a - b for a, b in zip(rows["ema"]["student_score"]["values"], rows["baseline"]["student_score"]["values"])
    ]
    ratio = rows["ema"]["student_score_spread_vs_baseline"]  # two seeds: too few to test a spread
    assert ratio["seeds"] == [1, 2] and ratio["std_ratio"] is None and "std / baseline's" in first["table"]
    saved = yaml.safe_load((out / "ema" / "seed-2" / "config.yaml").read_text())
    assert (saved["ema_decay"], saved["evals_per_epoch"], saved["data_seed"], saved["seed"]) == (0.5, 3, 7, 2)
    assert json.loads(results.read_text())["set"] == {"evals_per_epoch": 3, "data_seed": 7}
    late = rows["baseline"]["late_evaluation_std"]  # per seed: the std of the later half of 3 evaluations
    assert late["n"] == 2 and all(v >= 0 for v in late["values"])


@pytest.mark.slow
def test_gap_benchmark_pairs_the_spiking_students_with_the_dense_one(tiny_teacher, toy_files, tmp_path, capsys):
    """bench_gap: per T (and variant), the spiking student's paired difference to the dense student of its shape,
    and the attribution of each spiking run at its own T; the student trained on the exact rates scored at each
    T; every run's training fit; a second call reuses the runs and the attributions."""
    import yaml

    bench = load_benchmark("bench_gap")
    config = tmp_path / "tiny.yaml"
    config.write_text(
        yaml.safe_dump(
            dict(
                teacher=tiny_teacher.path,
                train_file=str(toy_files[0]),
                validation_file=str(toy_files[1]),
                max_seq_length=32,
                student_layers=2,
                batch_size=16,
                eval_batch_size=32,
                intermediate_epochs=1,
                prediction_epochs=1,
                intermediate_lr=1e-3,
                prediction_lr=1e-3,
                time_steps=8,
                calibration_examples=32,
                device="cpu",
                logging_steps=2,
            )
        )
    )
    out, results = tmp_path / "gap", tmp_path / "gap.json"
    argv = [
        "--config",
        str(config),
        "--time-steps",
        "2",
        "--seeds",
        "3",
        "--out",
        str(out),
        "--results",
        str(results),
        "--attribution-batches",
        "1",
        "--infinity",
        "--variant",
        "burst:spike_levels=intermediate=2,output=2",
    ]
    assert bench.main(argv) == 0
    rows = json.loads(results.read_text())["rows"]
    assert [(r["layers"], r["time_steps"], r["variant"]) for r in rows] == [(2, 2, ""), (2, 2, "burst")]
    for r in rows:
        run = out / "L2" / ("T2-burst" if r["variant"] else "T2") / "seed-3"
        metrics = json.loads((run / "metrics.json").read_text())
        dense = json.loads((out / "L2" / "dense" / "seed-3" / "metrics.json").read_text())
        assert metrics["time_steps"] == r["time_steps"] and dense["student_type"] == "dense"
        assert r["spiking_minus_dense"]["values"] == [metrics["student_score"] - dense["student_score"]]
        attribution = json.loads((run / "attribution" / "attribution.json").read_text())
        assert attribution["time_steps"] == [r["time_steps"]] and attribution["examples"] == 32  # one batch
        assert attribution["reference"]["dense student"] == dense["student_score"]
        assert r["recovered_clipped"]["head population"] == attribution["recovered"]["head population"]["clipped"][0]
    # the student trained on the exact rates, scored spiking at each T and at 32
    saved = json.loads(results.read_text())
    exact = out / "L2" / "Tinf" / "seed-3"
    assert yaml.safe_load((exact / "config.yaml").read_text())["train_for"] == "infinity"
    evaluated = {r["time_steps"]: r for r in json.loads((exact / "evaluate.json").read_text())["rows"]}
    for key, field in (("score_at", "score"), ("energy_at", "energy_ratio")):
        assert {int(t): v["values"] for t, v in saved["infinity"][0][key].items()} == {t: [evaluated[t][field]] for t in (2, 32)}
    levels = yaml.safe_load((out / "L2" / "T2-burst" / "seed-3" / "config.yaml").read_text())["spike_levels"]
    assert levels == "intermediate=2,output=2" and rows[1]["changes"] == {"spike_levels": levels}
    # the training fit: the mean of each stage's last ten logged losses
    fit = saved["fit"]
    assert [f["student"] for f in fit] == ["dense", "T = infinity", "T = 2", "T = 2, burst"]
    logged = [json.loads(line) for line in (out / "L2" / "dense" / "seed-3" / "metrics.jsonl").read_text().splitlines()]
    hidden = [r["hidden"] for r in logged if r.get("stage") == "intermediate" and "hidden" in r][-10:]
    assert fit[0]["fit"]["hidden"]["values"] == [pytest.approx(sum(hidden) / len(hidden))]
    assert all(set(f["fit"]) == {"hidden", "attention", "soft", "gold"} for f in fit)
    stamp = (out / "L2" / "T2" / "seed-3" / "attribution" / "attribution.json").stat().st_mtime
    capsys.readouterr()
    assert bench.main(argv) == 0
    assert capsys.readouterr().out.count("reusing the finished run") == 4  # dense, T = infinity, T = 2, T = 2 burst
    assert (out / "L2" / "T2" / "seed-3" / "attribution" / "attribution.json").stat().st_mtime == stamp


def test_merge_compare_adds_the_later_baselines_and_refuses_a_run_that_did_not_reproduce():
    merge_compare = load_benchmark("merge_compare")
    earlier = {
        "teacher_score": 0.8,
        "rows": [{"method": "eqspike", "time_steps": 4, "score": 0.70}, {"method": "dense", "time_steps": 4, "score": 0.75}],
    }
    later = {
        "teacher_score": 0.8,
        "baselines": ["ann", "qnn"],
        "rows": [{"method": "dense", "time_steps": 4, "score": 0.75}, {"method": "qnn", "time_steps": 4, "score": 0.72}],
    }
    merged, both = merge_compare.merge(earlier, later)
    assert {(r["method"], r["score"]) for r in merged["rows"]} == {("eqspike", 0.70), ("dense", 0.75), ("qnn", 0.72)}
    assert both == ["dense"]
    later["rows"][0]["score"] = 0.76  # the dense student trained again scored otherwise: not the same run
    with pytest.raises(SystemExit, match="the earlier run scored 0.75, the later 0.76"):
        merge_compare.merge(earlier, later)
