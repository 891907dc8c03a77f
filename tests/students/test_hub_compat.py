"""A trained student in the Hugging Face ecosystem: AutoConfig/AutoModelForSequenceClassification, a
text-classification pipeline, the model card, `eqspike predict` and TensorBoard scalars."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import QUIET, tiny_config, write_csv


@pytest.fixture(scope="module")
def run(tiny_teacher, toy_files, tmp_path_factory):
    from eqspike.distill.trainer import Distiller

    folder = tmp_path_factory.mktemp("hub") / "run"
    config = tiny_config(tiny_teacher, toy_files, folder, time_steps=4, report_to="tensorboard")
    result = Distiller(config, command="eqspike distill --time-steps 4", **QUIET).run()
    return folder, result


def test_auto_model_and_pipeline_give_the_students_own_logits(run):
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, pipeline

    import eqspike  # noqa: F401  (registers the students)
    from eqspike.students import load_student

    folder, _ = run
    student_dir = folder / "student"
    assert type(AutoConfig.from_pretrained(student_dir)).__name__ == "SpikingBertConfig"
    model = AutoModelForSequenceClassification.from_pretrained(student_dir)
    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    own = load_student(student_dir)
    texts = ["the movie was great", "a really dull plot"]
    batch = dict(tokenizer(texts, padding=True, return_tensors="pt"))
    with torch.no_grad():
        logits = model(**batch).logits
        expected = own(**batch).logits
        simulated = model(**batch, mode="simulate", time_steps=4).logits
    assert type(model).__name__ == "SpikingBertForSequenceClassification"
    assert torch.equal(logits, expected)
    assert not torch.equal(simulated, logits) or model.config.quantize_rates  # the forward argument is honoured

    classify = pipeline(
        "text-classification", model=model, tokenizer=tokenizer, top_k=None, device="cpu"
    )  # else it moves the model to a GPU
    answers = classify(texts)
    for answer, row in zip(answers, torch.softmax(expected, dim=-1)):
        scores = {item["label"]: item["score"] for item in answer}
        names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        assert scores == pytest.approx({name: float(p) for name, p in zip(names, row)}, abs=1e-6)

    model.config.equilibrium.forward = "simulate"  # the pipeline now runs the spiking network, T = 4 steps
    spiking = classify(texts)
    for answer, row in zip(spiking, torch.softmax(simulated, dim=-1)):
        assert max(item["score"] for item in answer) == pytest.approx(float(row.max()), abs=1e-6)
    model.config.equilibrium.forward = "solve"

    with torch.no_grad():
        out = model(**batch, labels=torch.tensor([1, 0]))
    assert out.loss is not None and torch.isclose(out.loss, torch.nn.functional.cross_entropy(out.logits, torch.tensor([1, 0])))
    assert set(out.rates) and out.hidden_values is not None  # the spiking extras stay


def test_spikelm_student_round_trips_through_transformers(tiny_teacher, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from eqspike.students import SpikeLMForSequenceClassification

    torch.manual_seed(0)
    student = SpikeLMForSequenceClassification.from_teacher(tiny_teacher.model, 2, time_steps=3).eval()
    ids = torch.tensor([[2, 5, 9, 3], [2, 7, 3, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        expected = student(ids, attention_mask=mask).logits
    student.save_pretrained(tmp_path / "spikelm")
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "spikelm")
    assert type(loaded).__name__ == "SpikeLMForSequenceClassification" and loaded.config.time_steps == 3
    with torch.no_grad():
        assert torch.equal(loaded(ids, attention_mask=mask).logits, expected)


def test_v0_1_student_loads_with_auto_model():
    from transformers import AutoModelForSequenceClassification

    import eqspike  # noqa: F401

    folder = Path(__file__).resolve().parents[1] / "fixtures" / "student_v0_1"
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    assert model.config.rounding == "trunc" and model.config.equilibrium.max_iter == 30


def test_model_card_has_hub_metadata_and_the_final_scores(run):
    folder, result = run
    card = (folder / "student" / "README.md").read_text()
    assert card.startswith("---\n")
    metadata = yaml.safe_load(card.split("---\n")[1])
    assert metadata["library_name"] == "eqspike" and metadata["pipeline_tag"] == "text-classification"
    value = metadata["model-index"][0]["results"][0]["metrics"][0]["value"]
    assert value == round(result["student_score"], 4)
    assert f"{result['teacher_score']:.4f}" in card and f"{result['student_energy_ratio']:.3f}" in card
    assert "eqspike distill --time-steps 4" in card and "T = 4" in card
    assert json.loads((folder / "metrics.json").read_text())["command"] == "eqspike distill --time-steps 4"


def test_evaluate_adds_its_scores_to_the_card(run, tmp_path, capsys):
    from eqspike.app.cli import main

    folder = tmp_path / "run"
    shutil.copytree(run[0], folder)
    assert main(["evaluate", str(folder), "--time-steps", "2", "8"]) == 0
    card = (folder / "student" / "README.md").read_text()
    rows = json.loads((folder / "evaluate.json").read_text())["rows"]
    for row in rows:
        assert f"| this student, spiking, T = {row['time_steps']} (`eqspike evaluate`) | {row['score']:.4f} |" in card


def test_tensorboard_receives_the_logged_scalars(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder, result = run
    events = EventAccumulator(str(folder / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "train/intermediate/loss" in tags and "train/prediction/lr" in tags and "selection/accuracy" in tags
    logged = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in logged if "eval" in r]
    assert [e.value for e in events.Scalars("selection/accuracy")] == pytest.approx([r["eval"]["accuracy"] for r in evals])


def test_predict_answers_texts_and_files(run, tmp_path, capsys):
    from eqspike.app.cli import main
    from eqspike.students import load_student

    folder, _ = run
    assert main(["predict", str(folder), "--text", "the movie was great", "a really dull plot"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line["text"] for line in lines] == ["the movie was great", "a really dull plot"]
    names = set(load_student(folder / "student").config.id2label.values())
    for line in lines:
        assert line["label"] in names and sum(line["probabilities"].values()) == pytest.approx(1, abs=1e-4)
        assert line["score"] == pytest.approx(max(line["probabilities"].values()), abs=1e-6)

    data = write_csv(
        tmp_path / "texts.csv", [("the plot was superb",), ("awful acting",), ("a lovely film",)], columns=("sentence1",)
    )
    out = tmp_path / "preds.jsonl"
    assert main(["predict", str(folder / "student"), "--file", str(data), "--output", str(out), "--time-steps", "8"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in rows] == ["the plot was superb", "awful acting", "a lovely film"]


def _empty_file(folder: Path) -> Path:
    (folder / "empty.csv").write_text("")
    return folder / "empty.csv"


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda tmp: ["--file", str(write_csv(tmp / "x.csv", [("a", 1)], columns=("review", "label")))],
            "has no text column: expected sentence1 or text, found review, label",
        ),
        (lambda tmp: ["--file", str(_empty_file(tmp))], "is empty"),
        (lambda tmp: [], "give either --text"),
        (lambda tmp: ["--text", "a", "b", "--text-pair", "c"], "2 --text but 1 --text-pair"),
    ],
)
def test_predict_bad_input_is_one_line(run, tmp_path, capsys, make, message):
    from eqspike.app.cli import main

    assert main(["predict", str(run[0]), *make(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_predict_unknown_directory_is_one_line(tmp_path, capsys):
    from eqspike.app.cli import main

    assert main(["predict", str(tmp_path / "nowhere"), "--text", "hello"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1


def test_readme_student_example_runs(run, capsys):
    """The README's Python example of a trained student, on the test run's student."""
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "pipeline(" in b]
    assert blocks, "README has no example of a trained student"
    code = blocks[0].replace("runs/quickstart/student", str(run[0] / "student"))
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "'label':" in printed and "'score':" in printed


def test_a_student_saved_before_the_transformers_classes_loads_with_auto_model():
    """tests/fixtures/student_v0_2dev was written by the 0.2 development code before the students became
    transformers models (nested equilibrium settings, no transformers_version, named labels, trained
    for T = 4 with hysteresis). AutoModel loads it and it gives the logits it gave then."""
    from transformers import AutoModelForSequenceClassification

    import eqspike  # noqa: F401
    from eqspike.teacher.store import load_tokenizer

    folder = Path(__file__).resolve().parents[1] / "fixtures" / "student_v0_2dev"
    expected = json.loads((folder.parent / "student_v0_2dev_logits.json").read_text())
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    assert model.config.id2label == {0: "neg", 1: "neutral", 2: "pos"} and model.config.num_labels == 3
    assert model.config.quantize_rates and model.config.hysteresis == 0.25 and model.config.rounding == "round"
    batch = dict(load_tokenizer(folder)(expected["texts"], padding=True, return_tensors="pt"))
    with torch.no_grad():
        assert torch.allclose(
            model(**batch, mode="simulate", time_steps=4).logits, torch.tensor(expected["simulate_T4"]), atol=1e-6
        )
        assert torch.allclose(model(**batch, mode="solve").logits, torch.tensor(expected["solve"]), atol=1e-6)
