"""Bad or unusual input, tried as a new user would, through the command line: every case ends with
exit code 2 and one line that names what is wrong, never a traceback; numeric YAML text is accepted.
(Crashes and kills are in test_crash.py.)"""

import errno
import json
import time
from pathlib import Path

import pytest
import torch
import yaml

from eqspike.app.cli import main
from tests.conftest import make_tiny_bert, toy_sentence, write_csv


def refused(capsys, *args) -> str:
    """Run the CLI; it must refuse with exit code 2 and a single line on stderr (no traceback)."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, (code, captured.out[-2000:], err)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def refused_at_parsing(capsys, *args) -> str:
    """Run the CLI on arguments its parser refuses: exit code 2 and one line on stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def distill_args(teacher, train, dev, out, *extra):
    return [
        "distill",
        "--teacher",
        teacher,
        "--train-file",
        train,
        "--validation-file",
        dev,
        "--output-dir",
        out,
        "--max-seq-length",
        32,
        "--student-layers",
        2,
        "--device",
        "cpu",
        *extra,
    ]


# ---------------------------------------------------------------------------- data files
def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.csv", "", "empty.csv is empty"),
        (
            "latin1.csv",
            "sentence1,label\ncaf\xe9 cr\xe8me,1\nplain,0\n".encode("latin-1"),
            "latin1.csv is not UTF-8 text (byte 0xe9 on line 2)",
        ),
        ("bad.json", '[{"sentence1": "a", "label": 1},\n {"sentence1": "b" "label": 0}]', "bad.json is not valid JSON (line 2"),
        (
            "bad.jsonl",
            '{"sentence1": "a", "label": 1}\n{"sentence1": "b", label: 0}\n',
            "bad.jsonl is not valid JSON lines (line 2",
        ),
        ("header.csv", "sentence1,label\n", "header.csv has a header (sentence1, label) but no rows"),
        (
            "one_label.csv",
            "sentence1,label\ngood film,1\ngreat plot,1\nfun,1\n",
            "one_label.csv has a single label ('1'); a classification task needs at least two",
        ),
        ("holes.csv", 'sentence1,label\ngood film,1\n"",0\nfun,1\n"  ",0\n', "holes.csv: lines 3, 5 have an empty 'sentence1'"),
        (
            "ragged.csv",
            "sentence1,label\ngood film,1\nbad,0,extra\n",
            "ragged.csv: line 3 has a different number of cells than the header",
        ),
        ("words.txt", "good film\n", "words.txt: unsupported format '.txt'; use .csv, .tsv, .json or .jsonl"),
    ],
)
def test_bad_data_files_are_named(tiny_teacher, toy_files, tmp_path, capsys, name, content, message):
    path = write(tmp_path / name, content)
    err = refused(capsys, *distill_args(tiny_teacher.path, path, toy_files[1], tmp_path / "run"))
    assert message in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_validation_labels_unknown_to_training_are_named(tiny_teacher, toy_files, tmp_path, capsys):
    dev = write_csv(tmp_path / "dev.csv", [("good", 1), ("bad", 0), ("odd", 7), ("odd", "spam")])
    err = refused(capsys, *distill_args(tiny_teacher.path, toy_files[0], dev, tmp_path / "run"))
    assert "dev.csv has labels that never occur in" in err and "'7', 'spam'" in err


def test_subsamples_are_drawn_at_random_not_from_the_head(tmp_path):
    """A dev file ordered by label (as fortunes' is) must not give a one-class subsample."""
    import random

    from eqspike.distill.config import RunConfig
    from eqspike.distill.prepare import prepare_data

    rng = random.Random(1)
    rows = [(toy_sentence(rng, label), label) for label in (0, 1) for _ in range(40)]  # all 0s, then all 1s
    train, dev = write_csv(tmp_path / "train.csv", rows), write_csv(tmp_path / "dev.csv", rows)
    teacher = make_tiny_bert(tmp_path / "bert", head_labels=2)
    config = RunConfig(
        teacher=str(teacher),
        train_file=str(train),
        validation_file=str(dev),
        max_seq_length=32,
        max_train_examples=10,
        max_eval_examples=10,
    )
    data = prepare_data(config, log=lambda *_: None)
    assert {e.label for e in data.task.train} == {0, 1} and {e.label for e in data.task.validation["validation"]} == {0, 1}
    again = prepare_data(config, log=lambda *_: None)  # seeded: the same subsample every time
    assert [e.text_a for e in again.task.train] == [e.text_a for e in data.task.train]

    # The seed draws the examples unless --data-seed holds the draws fixed across seeds.
    def drawn(**changes) -> tuple[list, list, list]:
        d = prepare_data(config.replace(max_train_examples=40, max_eval_examples=20, **changes), log=lambda *_: None)
        return (
            [e.text_a for e in d.task.train],
            [e.text_a for e in d.task.validation["validation"]],
            d.selection["selection"].input_ids,
        )

    one, two = drawn(seed=1), drawn(seed=2)
    assert all(a != b for a, b in zip(one, two))  # train, dev and selection split
    assert drawn(seed=1, data_seed=7) == drawn(seed=2, data_seed=7) == drawn(seed=7)


# ---------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    "flag, value",
    [
        ("--prediction-lr", "inf"),
        ("--intermediate-lr", "inf"),
        ("--teacher-lr", "inf"),
        ("--weight-decay", "nan"),
        ("--max-grad-norm", "nan"),
        ("--temperature", "inf"),
        ("--threshold-lr", "nan"),
        ("--warmup-ratio", "inf"),
        ("--hidden-weight", "-inf"),
        ("--energy-budget", "inf"),
        ("--threshold-quantile", "nan"),
        ("--hysteresis", "nan"),
    ],
)
def test_non_finite_settings_are_refused(tiny_teacher, toy_files, tmp_path, capsys, flag, value):
    err = refused(capsys, *distill_args(tiny_teacher.path, *toy_files, tmp_path / "run", f"{flag}={value}"))
    name = flag[2:].replace("-", "_")
    assert f"{name}={float(value)!r} is not valid" in err
    assert not (tmp_path / "run").exists()


def test_yaml_numbers_without_a_dot_are_numbers(tiny_teacher, toy_files, tmp_path, capsys):
    """YAML 1.1 reads 2e-4 as text; a numeric setting takes it as the number it is."""
    config = tmp_path / "run.yaml"
    config.write_text("intermediate_lr: 2e-4\nprediction_lr: 1e-3\nbatch_size: '16'\nmax_steps: 1\n")
    code = main([str(a) for a in distill_args(tiny_teacher.path, *toy_files, tmp_path / "run", "--config", config)])
    assert code == 0, capsys.readouterr().err
    import yaml

    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["intermediate_lr"] == 0.0002 and saved["prediction_lr"] == 0.001 and saved["batch_size"] == 16
    config.write_text("intermediate_lr: fast\n")
    assert "intermediate_lr='fast' is not valid" in refused(
        capsys, *distill_args(tiny_teacher.path, *toy_files, tmp_path / "other", "--config", config)
    )


# ---------------------------------------------------------------------------- the teacher
def test_a_teacher_of_an_unsupported_family_is_refused_before_any_work(toy_files, tmp_path, capsys):
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    folder = tmp_path / "deberta"
    DebertaV2ForSequenceClassification(
        DebertaV2Config(
            vocab_size=30,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    ).save_pretrained(folder)
    capsys.readouterr()  # save_pretrained's progress bar
    started = time.time()
    err = refused(capsys, *distill_args(folder, *toy_files, tmp_path / "run", "--teacher-store", tmp_path / "store"))
    assert "is a 'deberta-v2' model: DeBERTa's disentangled attention" in err
    assert "eqspike distils the encoder families bert, roberta, xlm-roberta, distilbert, electra, mpnet" in err
    assert time.time() - started < 30 and not (tmp_path / "store").exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--student-layers", 12, "student_layers=12 but the teacher"),
        ("--max-seq-length", 1024, "max_seq_length=1024 exceeds the 64 positions of the teacher"),
    ],
)
def test_a_student_that_does_not_fit_the_teacher_is_refused_before_any_work(
    tiny_bert, toy_files, tmp_path, capsys, flag, value, message
):
    args = distill_args(tiny_bert, *toy_files, tmp_path / "run", "--teacher-store", tmp_path / "store")
    args[args.index(flag) + 1] = value
    err = refused(capsys, *args)
    assert message in err and not (tmp_path / "store").exists()  # no teacher fine-tuning was started


def test_the_headline_command_offline_fails_fast_and_names_every_missing_input(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    started = time.time()
    err = refused(capsys, "distill", "--teacher", "bert-base-uncased", "--task", "mnli")
    assert time.time() - started < 20
    assert "(1) could not load GLUE task 'mnli'" in err and "(2) teacher 'bert-base-uncased'" in err
    assert "--data-dir" in err and "--teacher /path/to/model" in err


# ---------------------------------------------------------------------------- runs that go wrong
def test_a_diverging_run_stops_with_its_last_good_checkpoint(tiny_teacher, toy_files, tmp_path, capsys, monkeypatch):
    """The 5th step's gradient is made non-finite (as a too-large learning rate would): the run stops
    before applying it, keeps the checkpoint of step 4, writes no metrics.json, and says what to do."""
    run, norms = tmp_path / "run", []
    real_clip = torch.nn.utils.clip_grad_norm_

    def clip(parameters, max_norm, *args, **kwargs):
        norms.append(real_clip(parameters, max_norm, *args, **kwargs))
        return torch.tensor(float("nan")) if len(norms) == 5 else norms[-1]

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    err = refused(
        capsys,
        *distill_args(tiny_teacher.path, *toy_files, run, "--batch-size", 16, "--save-steps", 2, "--calibration-examples", 16),
    )
    assert "training diverged at step 5 (intermediate stage): the gradient is not finite" in err
    assert f"the last good checkpoint, {run / 'checkpoint'} (step 4), is kept" in err and "--intermediate-lr" in err
    assert json.loads((run / "checkpoint" / "state.json").read_text())["global_step"] == 4
    weights = torch.load(run / "checkpoint" / "student.pt")
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    assert not (run / "metrics.json").exists()


@pytest.fixture
def finished_run(tiny_teacher, toy_files, tmp_path_factory):
    run = tmp_path_factory.mktemp("finished") / "run"
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


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    "damage, command, message",
    [
        (
            lambda run: (run / "student" / "model.safetensors").write_bytes(b"\x00" * 10),
            "evaluate",
            "model.safetensors is corrupted",
        ),
        (lambda run: (run / "student" / "config.json").write_text("{not json"), "evaluate", "config.json is corrupted"),
        (lambda run: _truncate(run / "checkpoint" / "student.pt"), "resume", "student.pt is corrupted"),
        (lambda run: (run / "checkpoint" / "state.json").write_text('{"stage": 1'), "resume", "state.json is corrupted"),
    ],
)
def test_corrupted_files_are_named(finished_run, tmp_path, capsys, damage, command, message):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    damage(run)
    args = ["evaluate", run, "--time-steps", 4] if command == "evaluate" else ["distill", "--resume", "--output-dir", run]
    assert message in refused(capsys, *args)


def test_non_finite_weights_are_refused_on_load(finished_run, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    weights = load_file(str(run / "student" / "model.safetensors"))
    weights["classifier.weight"][0, 0] = float("nan")
    save_file(weights, str(run / "student" / "model.safetensors"))
    err = refused(capsys, "evaluate", run, "--time-steps", 4)
    assert "model.safetensors holds non-finite weights (classifier.weight)" in err


def test_a_full_disk_during_a_checkpoint_says_so_and_keeps_the_last_one(tiny_teacher, toy_files, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    real_save, calls = torch.save, []

    def save(obj, path, *args, **kwargs):  # the second checkpoint finds the disk full
        calls.append(path)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    err = refused(
        capsys,
        *distill_args(tiny_teacher.path, *toy_files, run, "--batch-size", 16, "--save-steps", 2, "--calibration-examples", 16),
    )
    assert "no space left on the device holding" in err and "while writing checkpoint" in err
    assert "the previous checkpoint is intact" in err
    assert json.loads((run / "checkpoint" / "state.json").read_text())["global_step"] == 2
    assert not [p for p in run.iterdir() if p.name.startswith(".checkpoint.")]  # no staging copy left behind


def test_log_files_get_progress_lines(tiny_teacher, toy_files, tmp_path, capsys):
    """Without a terminal (nohup, a batch scheduler) the bars are off and lines come every --logging-steps."""
    code = main(
        [
            str(a)
            for a in distill_args(
                tiny_teacher.path,
                *toy_files,
                tmp_path / "run",
                "--batch-size",
                16,
                "--logging-steps",
                3,
                "--calibration-examples",
                16,
                "--intermediate-epochs",
                1,
                "--prediction-epochs",
                1,
            )
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith("distill intermediate: step")]
    assert [line.split()[3] for line in lines] == ["3/6", "6/6"]
    assert all(" | loss " in line and " | lr " in line and " ex/s | ETA " in line for line in lines)


def test_a_bad_flag_is_one_line_with_a_pointer_to_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["distill", "--batch-size", "many"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert "argument --batch-size: invalid int value: 'many'" in err and "eqspike distill --help" in err


# ---------------------------------------------------------------------------- nothing lost
def test_overwrite_replaces_only_a_run_directory_eqspike_made(tiny_teacher, toy_files, tmp_path, capsys):
    """--overwrite clears a folder with eqspike's run marker (or a pre-marker run's files alone); a folder of
    other files, or a file, is refused with what it holds, and nothing in it changes."""
    quick = ("--overwrite", "--max-steps", 1, "--calibration-examples", 16)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    (mine / "data").mkdir()
    err = refused(capsys, *distill_args(tiny_teacher.path, *toy_files, mine, *quick))
    assert "--overwrite replaces only a run directory eqspike made" in err and "data/, notes.txt" in err
    assert (mine / "notes.txt").read_text() == "my notes" and sorted(p.name for p in mine.iterdir()) == ["data", "notes.txt"]
    a_file = write(tmp_path / "a_file", "x")
    assert "is a file" in refused(capsys, *distill_args(tiny_teacher.path, *toy_files, a_file, *quick))
    assert a_file.read_text() == "x"
    run = tmp_path / "run"
    assert main([str(a) for a in distill_args(tiny_teacher.path, *toy_files, run, *quick)]) == 0
    assert (run / ".eqspike-run").is_file()
    assert main([str(a) for a in distill_args(tiny_teacher.path, *toy_files, run, *quick)]) == 0  # its own run
    (run / ".eqspike-run").unlink()  # a run from before the marker: its files alone are enough
    assert main([str(a) for a in distill_args(tiny_teacher.path, *toy_files, run, *quick)]) == 0
    (run / ".eqspike-run").unlink()
    (run / "mine.txt").write_text("kept")
    assert "mine.txt" in refused(capsys, *distill_args(tiny_teacher.path, *toy_files, run, *quick))
    assert (run / "mine.txt").read_text() == "kept"


def test_outputs_that_would_replace_an_input_or_are_of_the_wrong_kind_are_refused_first(finished_run, tmp_path, capsys):
    """predict --output the input file, an output file that is a folder, an output folder that is a file:
    one line, before the model runs, and the files are as they were."""
    inputs = write(tmp_path / "inputs.csv", "sentence1\ngood film\nbad film\n")
    before = inputs.read_bytes()
    student = finished_run / "student"
    err = refused(capsys, "predict", student, "--file", inputs, "--output", inputs, "--device", "cpu")
    assert "is also this command's input" in err and inputs.read_bytes() == before
    assert "is a directory" in refused(capsys, "predict", student, "--file", inputs, "--output", tmp_path, "--device", "cpu")
    a_file = write(tmp_path / "report", "mine")
    for command in (["diagnose", finished_run, "--out", a_file, "--device", "cpu"],):
        assert "is a file; give a folder" in refused(capsys, *command)
    assert a_file.read_text() == "mine" and not (finished_run / "diagnostics").exists()


def test_evaluate_adds_to_its_history_and_each_row_says_what_it_measured(finished_run, capsys):
    """A second evaluate appends its rows (the first one's stay, in the file and the model card); a row
    names its examples (distill's seeded draw when fewer) and any neuron override; a bad count is refused."""
    assert main(["evaluate", str(finished_run), "--time-steps", "4", "--device", "cpu"]) == 0
    first = json.loads((finished_run / "evaluate.json").read_text())["rows"]
    distilled = json.loads((finished_run / "metrics.json").read_text())
    assert len(first) == 1 and first[0]["score"] == distilled["student_score"] and first[0]["neuron"] == {}
    assert first[0]["examples"] == first[0]["dev_examples"] and "data_seed" not in first[0]
    assert (
        main(
            [
                "evaluate",
                str(finished_run),
                "--time-steps",
                "4",
                "8",
                "--max-eval-examples",
                "5",
                "--rounding",
                "trunc",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    rows = json.loads((finished_run / "evaluate.json").read_text())["rows"]
    assert rows[0] == first[0] and [r["time_steps"] for r in rows] == [4, 4, 8]
    seed = yaml.safe_load((finished_run / "config.yaml").read_text())["seed"]
    assert all(r["examples"] == 5 and r["neuron"] == {"rounding": "trunc"} and r["data_seed"] == seed for r in rows[1:])
    card = (finished_run / "student" / "README.md").read_text()
    assert f"| this student, spiking, T = 4 (`eqspike evaluate`) | {rows[0]['score']:.4f} |" in card
    assert (
        f"| this student, spiking, T = 8 (`eqspike evaluate`, rounding trunc, 5 of {rows[0]['dev_examples']} "
        f"dev examples) | {rows[2]['score']:.4f} |"
    ) in card
    assert "argument --max-eval-examples: -3 is not valid; it must be an integer >= 1" in refused_at_parsing(
        capsys, "evaluate", finished_run, "--max-eval-examples", -3
    )
    assert len(json.loads((finished_run / "evaluate.json").read_text())["rows"]) == 3


def test_evaluate_writes_each_examples_prediction_and_they_give_its_score(finished_run, capsys):
    """--predictions: RUN/predictions/T<T>.csv, one row per dev example; their accuracy is the score
    evaluate reports at that T, and the labels are the dev file's."""
    import csv

    assert main(["evaluate", str(finished_run), "--time-steps", "2", "4", "--predictions", "--device", "cpu"]) == 0
    rows = json.loads((finished_run / "evaluate.json").read_text())["rows"][-2:]
    for row in rows:
        table = list(csv.DictReader((finished_run / "predictions" / f"T{row['time_steps']}.csv").open()))
        assert len(table) == row["dev_examples"] and [int(r["example"]) for r in table] == list(range(len(table)))
        assert all(r["correct"] == str(int(r["label"] == r["prediction"])) for r in table)
        assert sum(int(r["correct"]) for r in table) / len(table) == pytest.approx(row["score"])
    dev = yaml.safe_load((finished_run / "config.yaml").read_text())["validation_file"]
    assert [r["label"] for r in table] == [row[-1] for row in csv.reader(open(dev))][1:]


def test_evaluate_scores_the_examples_distill_drew(tiny_teacher, toy_files, tmp_path, capsys):
    """A run trained with --max-eval-examples: evaluate at its T scores distill's seeded draw of the dev
    set (not the file's first N), so it gives distill's score."""
    from eqspike.distill.trainer import Distiller
    from tests.conftest import QUIET, tiny_config

    run = tmp_path / "run"
    Distiller(tiny_config(tiny_teacher, toy_files, run, time_steps=4, max_eval_examples=9, prediction_epochs=1), **QUIET).run()
    assert main(["evaluate", str(run), "--time-steps", "4", "--device", "cpu"]) == 0
    row = json.loads((run / "evaluate.json").read_text())["rows"][0]
    distilled = json.loads((run / "metrics.json").read_text())
    assert row["examples"] == 9 and row["score"] == distilled["student_score"]
    assert row["energy_ratio"] == pytest.approx(distilled["student_energy_ratio"], rel=1e-6)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["predict", "RUN", "--text", "a", "--batch-size", "0"],
            "argument --batch-size: 0 is not valid; it must be an integer >= 1",
        ),
        (
            ["predict", "RUN", "--text", "a", "--time-steps", "-2"],
            "argument --time-steps: -2 is not valid; it must be an integer >= 1",
        ),
        (["predict", "RUN", "--text", "a", "--max-seq-length", "-5"], "argument --max-seq-length: -5 is not valid"),
        (
            ["predict", "RUN", "--text", "a", "--hysteresis", "0.7"],
            "argument --hysteresis: 0.7 is not valid; it must lie in [0.0, 0.5]",
        ),
        (["evaluate", "RUN", "--time-steps", "4", "0"], "argument --time-steps: 0 is not valid"),
        (["diagnose", "RUN", "--batches", "-1"], "argument --batches: -1 is not valid; it must be an integer >= 1"),
        (["diagnose", "RUN", "--batch-size", "x"], "argument --batch-size: invalid int value: 'x'"),
        (["compare", "--time-steps", "0"], "argument --time-steps: 0 is not valid"),
        (["compare", "--seeds", "-1"], "argument --seeds: -1 is not valid; it must be an integer >= 0"),
        (["distill", "--seeds", "1", "-4"], "argument --seeds: -4 is not valid"),
        (["selfcheck", "--seed", "-3"], "argument --seed: -3 is not valid"),
    ],
)
def test_every_command_checks_its_numbers_before_any_work(capsys, args, message):
    """The numeric arguments of every command are checked when parsed (one rule, errors.int_at_least and
    float_within): one line naming the argument and its bound, before anything is loaded."""
    assert message in refused_at_parsing(capsys, *args)


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("--seed", "-1", "seed=-1 is not valid; it must be an integer >= 0"),
        ("--data-seed", "-2", "data_seed=-2 is not valid; it must be an integer >= 0"),
        ("--teacher-epochs", "0", "teacher_epochs=0.0 is not valid"),
    ],
)
def test_distill_settings_without_a_valid_meaning_are_refused(tiny_teacher, toy_files, tmp_path, capsys, setting, value, message):
    assert message in refused(capsys, *distill_args(tiny_teacher.path, *toy_files, tmp_path / "run", setting, value))
    assert not (tmp_path / "run").exists()


def test_every_student_kind_through_predict_evaluate_and_diagnose(tiny_teacher, tmp_path, capsys):
    """A SpikeLM or dense student runs through predict as it was trained; what has no meaning for its kind
    (another T, an equilibrium, T-sweeps of populations it has not got) is refused by name, in one line."""
    from transformers import AutoTokenizer

    from eqspike.students import DenseBertForSequenceClassification, SpikeLMForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher.path)
    for kind, model in (
        ("spikelm", SpikeLMForSequenceClassification.from_teacher(tiny_teacher.model, 2, time_steps=2)),
        ("dense", DenseBertForSequenceClassification.from_teacher(tiny_teacher.model, 2)),
    ):
        folder = tmp_path / kind / "student"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(str(folder))
        (folder.parent / "config.yaml").write_text("max_seq_length: 32\n")
        assert main(["predict", str(folder), "--text", "good film", "--device", "cpu"]) == 0
        assert '"label"' in capsys.readouterr().out
        if kind == "dense":  # trained on single texts, given pairs: it warns on stderr and goes on
            model.config.text_pairs = False
            model.save_pretrained(folder)
            assert main(["predict", str(folder), "--text", "a", "b", "--text-pair", "c", "d", "--device", "cpu"]) == 0
            captured = capsys.readouterr()
            assert captured.out.count('"label"') == 2
            assert "warning: 2 of 2 inputs are pairs of texts, but this student was trained on single texts" in captured.err
        expected = {
            "spikelm": ("runs at T = 2 only", "a SpikeLM student has none"),
            "dense": ("a dense student has no spikes",) * 2,
        }[kind]
        for extra, message in zip((["--time-steps", "4"], ["--mode", "solve"]), expected):
            assert message in refused(capsys, "predict", folder, "--text", "good film", "--device", "cpu", *extra)
        (folder.parent / "metrics.json").write_text("{}")
        for command in ("evaluate", "diagnose"):
            err = refused(capsys, command, folder.parent, "--time-steps", "4", "--device", "cpu")
            assert f"{command}: {folder.parent} holds a" in err and "which has no populations to run at other T" in err


def test_likely_mistakes_are_refused_or_warned(tiny_teacher, toy_files, tmp_path, capsys):
    """A key given twice in a YAML file and an empty --output-dir are refused by name; a dev set that is
    the training set is run, with a one-line warning."""
    config = write(tmp_path / "twice.yaml", "batch_size: 16\nseed: 1\nbatch_size: 8\n")
    err = refused(capsys, *distill_args(tiny_teacher.path, *toy_files, tmp_path / "run", "--config", config))
    assert "key 'batch_size' is given twice (lines 1 and 3); keep one" in err
    assert "output_dir='' is not valid: it is empty" in refused(capsys, *distill_args(tiny_teacher.path, *toy_files, ""))
    store = write(tmp_path / "store", "not a folder")
    err = refused(capsys, *distill_args(tiny_teacher.path, *toy_files, tmp_path / "run", "--teacher-store", store))
    assert f"--teacher-store {store} is a file; give a folder" in err and store.read_text() == "not a folder"
    from eqspike.distill.config import RunConfig
    from eqspike.distill.prepare import prepare_data

    messages = []
    prepare_data(
        RunConfig(teacher=tiny_teacher.path, train_file=str(toy_files[0]), validation_file=str(toy_files[0]), max_seq_length=32),
        log=messages.append,
    )
    warnings = [m for m in messages if m.startswith("warning:")]
    assert len(warnings) == 1 and "also occur in the training data; the dev score measures fitting" in warnings[0]


def test_ctrl_c_says_exactly_what_to_type(tiny_teacher, toy_files, tmp_path, capsys, monkeypatch):
    from eqspike.distill.trainer import Distiller

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Distiller, "run", interrupted)
    run = tmp_path / "my run"
    assert main([str(a) for a in distill_args(tiny_teacher.path, *toy_files, run)]) == 130
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"interrupted; continue with: eqspike distill --resume --output-dir '{run}'")


def test_a_sequence_too_short_for_text_is_refused_and_a_budget_that_cannot_bind_is_warned(
    tiny_teacher, toy_files, tmp_path, capsys
):
    err = refused(capsys, *distill_args(tiny_teacher.path, *toy_files, tmp_path / "short", "--max-seq-length", 2))
    assert "max_seq_length=2 leaves no room for text: the tokenizer adds 2 special tokens to a text; give at least 3" in err
    from eqspike.distill.trainer import Distiller
    from tests.conftest import tiny_config

    messages = []
    Distiller(
        tiny_config(
            tiny_teacher,
            toy_files,
            tmp_path / "loose",
            time_steps=4,
            energy_budget=50.0,
            intermediate_epochs=0,
            prediction_epochs=1,
        ),
        log=messages.append,
    ).run()
    assert any(m.startswith("warning: the student starts this stage at") and "within the budget 50" in m for m in messages)
