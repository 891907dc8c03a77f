import numpy as np
import pytest

from eqspike.data.metrics import compute_metrics
from eqspike.data.tasks import TASK_NAMES, DataError, load_fortunes, load_task_data
from tests.conftest import write_csv


def test_csv_files_labels_read_from_the_data(tmp_path):
    train = write_csv(tmp_path / "train.csv", [("a b", "sports"), ("c d", "food"), ("e", "love")])
    dev = write_csv(tmp_path / "dev.csv", [("f", "food"), ("g", "sports")])
    task = load_task_data(train_file=train, validation_file=dev)
    assert task.label_names == ["food", "love", "sports"]  # the training labels, sorted
    assert task.num_labels == 3 and task.metric == "accuracy"
    assert [e.label for e in task.validation["validation"]] == [0, 2]
    numeric = write_csv(tmp_path / "numeric.csv", [("a", 1), ("b", 0), ("c", 1)])
    task = load_task_data(train_file=numeric, validation_file=numeric)
    assert task.label_names == ["0", "1"] and [e.label for e in task.train] == [1, 0, 1]


def test_json_pairs_and_regression(tmp_path):
    import json

    rows = [{"sentence1": "a", "sentence2": "b", "label": 3.2}, {"sentence1": "c", "sentence2": "d", "label": 1.0}]
    for name in ("train.jsonl", "dev.jsonl"):
        (tmp_path / name).write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    task = load_task_data(train_file=tmp_path / "train.jsonl", validation_file=tmp_path / "dev.jsonl")
    assert task.is_regression and task.num_labels == 1 and task.metric == "pearson"
    assert task.train[0].text_b == "b" and task.train[0].label == pytest.approx(3.2)


def test_missing_column_is_named(tmp_path):
    train = write_csv(tmp_path / "train.csv", [("a", 1)], columns=("text", "label"))
    dev = write_csv(tmp_path / "dev.csv", [("b", 0)])
    with pytest.raises(DataError, match=r"train.csv has no column 'sentence1'; its columns: text, label"):
        load_task_data(train_file=train, validation_file=dev)


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(
        DataError,
        match=r"unknown task 'sst3'; valid tasks: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli, fortunes, fortunes-many",
    ):
        load_task_data("sst3")
    assert len(TASK_NAMES) == 11


def test_glue_hub_unreachable_says_what_to_do():
    with pytest.raises(DataError, match=r"nyu-mll/glue.*pass --data-dir with the original GLUE TSV files"):
        load_task_data("rte")


def test_original_glue_tsvs(tmp_path):
    mnli = tmp_path / "MNLI"
    mnli.mkdir()
    header = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n"
    row = lambda s1, s2, g: f"0\t1\t2\tfiction\t-\t-\t-\t-\t{s1}\t{s2}\t{g}\t{g}\n"  # noqa: E731
    (mnli / "train.tsv").write_text(header + row('A man "sleeps', "He rests", "entailment") + row("x", "y", "contradiction"))
    (mnli / "dev_matched.tsv").write_text(header + row("p", "q", "neutral"))
    (mnli / "dev_mismatched.tsv").write_text(header + row("r", "s", "entailment"))
    task = load_task_data("mnli", data_dir=mnli)
    assert list(task.validation) == ["validation_matched", "validation_mismatched"]
    assert task.main_split == "validation_matched"  # never the mismatched set
    assert [e.label for e in task.train] == [0, 2] and task.train[0].text_a == 'A man "sleeps'
    cola = tmp_path / "CoLA"
    cola.mkdir()
    (cola / "train.tsv").write_text("gj04\t1\t\tThe book is red.\ngj04\t0\t*\tBook red the is.\n")
    (cola / "dev.tsv").write_text("gj04\t1\t\tIt rains.\n")
    task = load_task_data("cola", data_dir=cola)
    assert task.metric == "mcc" and [e.label for e in task.train] == [1, 0]
    with pytest.raises(DataError, match=r"has no train.tsv, dev.tsv \(the original GLUE files for .sst2.\)"):
        load_task_data("sst2", data_dir=cola / "nowhere")


def test_fortunes_is_real_and_fixed():
    task = load_fortunes()
    again = load_fortunes()
    assert task.label_names == ["computers", "food", "love", "politics", "science", "sports", "startrek"]
    assert len(task.train) > 1000 and len(task.validation["validation"]) > 300
    assert [e.text_a for e in task.train[:5]] == [e.text_a for e in again.train[:5]]
    assert not {e.text_a for e in task.train} & {e.text_a for e in task.validation["validation"]}


def test_fortunes_many_is_a_fixed_many_class_task():
    task = load_task_data("fortunes-many")
    assert task.name == "fortunes-many" and len(task.label_names) == 28 and "disclaimer" not in task.label_names
    counts = np.bincount([e.label for e in task.train + task.validation["validation"]], minlength=28)
    assert counts.max() == 200 and counts.min() >= 145  # every category has about 150 quotes or more
    assert not {e.text_a for e in task.train} & {e.text_a for e in task.validation["validation"]}
    assert [e.text_a for e in task.train[:5]] == [e.text_a for e in load_task_data("fortunes-many").train[:5]]


def test_metrics():
    from eqspike.data.tasks import TaskData

    binary = TaskData("mrpc", [], {"validation": []}, ["no", "yes"], "f1")
    m = compute_metrics(binary, np.array([1, 1, 0, 0]), np.array([1, 0, 0, 1]))
    assert m == {"accuracy": 0.5, "f1": 0.5}
    cola = TaskData("cola", [], {"validation": []}, ["no", "yes"], "mcc")
    assert compute_metrics(cola, np.array([1, 0, 1, 0]), np.array([1, 0, 1, 0]))["mcc"] == pytest.approx(1.0)
    assert compute_metrics(cola, np.array([0, 1, 0, 1]), np.array([1, 0, 1, 0]))["mcc"] == pytest.approx(-1.0)
    stsb = TaskData("stsb", [], {"validation": []}, None, "pearson")
    r = compute_metrics(stsb, np.array([1.0, 2.0, 3.0, 5.0]), np.array([2.0, 4.0, 6.0, 7.0]))
    assert r["spearmanr"] == pytest.approx(1.0) and 0.9 < r["pearson"] < 1.0


def test_labels_as_the_user_meant_them(tmp_path):
    """The label type is inferred and said (words and whole numbers: classes; numbers with a decimal point:
    scores), or set with label_type; NaN labels, numbers mixed with words and labels that differ only by
    case are refused by name under 'auto'."""

    def files(labels):
        folder = tmp_path / "-".join(map(str, labels))
        folder.mkdir()
        train = write_csv(folder / "train.csv", [(f"text {i}", label) for i, label in enumerate(labels)])
        return train, write_csv(folder / "dev.csv", [(f"dev {i}", label) for i, label in enumerate(labels)])

    scores = files(["5.000", "1.000", "3.000"])  # STS-B-style scores
    task = load_task_data(train_file=scores[0], validation_file=scores[1])
    assert task.is_regression and "regression, inferred: numbers written with a decimal point (e.g. '5.000')" in task.label_note
    task = load_task_data(train_file=scores[0], validation_file=scores[1], label_type="classification")
    assert task.label_names == ["1", "3", "5"] and "--label-type classification" in task.label_note
    whole = files([0, 1, 1])
    task = load_task_data(train_file=whole[0], validation_file=whole[1])
    assert task.label_names == ["0", "1"] and "classification, inferred: whole numbers" in task.label_note
    task = load_task_data(train_file=whole[0], validation_file=whole[1], label_type="regression")
    assert task.is_regression and [e.label for e in task.train] == [0.0, 1.0, 1.0]
    refusals = [
        (files(["1.5", "nan", "2.0", "NaN"]), "auto", r"train.csv: lines 3, 5 have labels that are NaN or infinite"),
        (files(["pos", "Pos", "neg", "POS"]), "auto", r"labels that differ only by case: 'POS', 'Pos', 'pos'"),
        (files(["pos", "1", "neg"]), "auto", r"the training labels mix numbers \('1'\) and words \('pos'\)"),
        (files(["pos", "neg"]), "regression", r"train.csv: a regression task needs numbers as labels, and lines 2, 3 have 'pos'"),
    ]
    for (train, dev), label_type, message in refusals:
        with pytest.raises(DataError, match=message):
            load_task_data(train_file=train, validation_file=dev, label_type=label_type)
    cased = files(["pos", "Pos", "neg"])
    assert load_task_data(train_file=cased[0], validation_file=cased[1], label_type="classification").num_labels == 3
    with pytest.raises(DataError, match="label_type='regression' does not fit task 'fortunes', a classification task"):
        load_task_data("fortunes", label_type="regression")


def test_the_run_says_which_label_type_it_inferred(tiny_teacher, toy_files):
    from eqspike.distill.config import RunConfig
    from eqspike.distill.prepare import prepare_data

    messages = []
    prepare_data(
        RunConfig(teacher=tiny_teacher.path, train_file=str(toy_files[0]), validation_file=str(toy_files[1]), max_seq_length=32),
        log=messages.append,
    )
    assert any(m.startswith("data: ") and "; labels: classification, inferred" in m for m in messages), messages


@pytest.mark.parametrize("pairs", [False, True])
def test_a_split_tokenised_in_chunks_holds_the_tokenizers_ids_in_a_few_bytes_per_token(tiny_teacher, pairs):
    import hashlib
    import random

    import torch

    from eqspike.data.batches import EncodedSplit
    from eqspike.data.tasks import Example
    from tests.conftest import toy_sentence

    rng = random.Random(0)
    examples = [Example(toy_sentence(rng, i % 2), toy_sentence(rng, 1) if pairs else None, i % 2) for i in range(50)]
    tokenizer = tiny_teacher.tokenizer
    split = EncodedSplit(examples, tokenizer, 12, chunk=7)
    whole = tokenizer(
        [e.text_a for e in examples], [e.text_b for e in examples] if pairs else None, truncation=True, max_length=12
    )
    assert len(split) == 50 and [list(ids) for ids in split.input_ids] == whole["input_ids"]
    assert split.input_ids == whole["input_ids"] and split.input_ids != whole["input_ids"][:-1]
    assert EncodedSplit(examples, tokenizer, 12).input_ids == split.input_ids  # the same, in one chunk
    assert [list(t) for t in split.token_type_ids] == whole["token_type_ids"]
    assert any(1 in t for t in whole["token_type_ids"]) == pairs
    # the fingerprint stored teachers and caches are keyed by is the one of the lists
    digest, expected = hashlib.sha256(), hashlib.sha256()
    split.update_digest(digest)
    for ids, types in zip(whole["input_ids"], whole["token_type_ids"]):
        expected.update(np.asarray(ids, dtype=np.int64).tobytes())
        expected.update(np.asarray(types, dtype=np.int8).tobytes())
    expected.update(np.asarray([e.label for e in examples], dtype=np.float64).tobytes())
    assert digest.hexdigest() == expected.hexdigest()
    batch = split.collate([split[i] for i in (3, 4)])
    longest = max(len(whole["input_ids"][i]) for i in (3, 4))
    assert batch["input_ids"].shape == (2, longest) and batch["input_ids"].dtype == torch.long
    assert batch["input_ids"][0, : len(whole["input_ids"][3])].tolist() == whole["input_ids"][3]
    tokens = sum(map(len, whole["input_ids"]))
    assert split.nbytes <= 5 * tokens + 2 * 8 * (len(examples) + 1)
