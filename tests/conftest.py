import csv
import os
import random
import tempfile

# No network in tests: the Hub is unreachable here and must fail fast. Set before transformers/datasets
# are imported (they read these at import time); keep the datasets cache out of the home directory.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="eqspike-hf-home-"))

import pytest  # noqa: E402
import torch  # noqa: E402

POSITIVE = ["good", "great", "fun", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "boring", "dull", "poor"]
FILLER = ["the", "a", "movie", "film", "plot", "acting", "was", "is", "very", "really", "and", "story"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *FILLER]


def toy_sentence(rng: random.Random, label: int) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(2, 6))]
    words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label else NEGATIVE))
    return " ".join(words)


def write_csv(path, rows, columns=("sentence1", "label")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def toy_files(tmp_path_factory):
    """A toy sentiment task (synthetic, for tests only): the label is the polarity word's."""
    folder = tmp_path_factory.mktemp("toy_data")
    rng = random.Random(0)
    for name, count in (("train", 96), ("dev", 48)):
        rows = []
        for i in range(count):
            label = i % 2
            rows.append((toy_sentence(rng, label), label))
        write_csv(folder / f"{name}.csv", rows)
    return folder / "train.csv", folder / "dev.csv"


def make_tiny_bert(folder, head_labels: int | None = None, layers: int = 4, seed: int = 0, vocab_size: int | None = None):
    """A tiny BERT (hidden 32, 4 heads) with a word-level WordPiece vocabulary, saved with
    save_pretrained. head_labels: also save a ...ForSequenceClassification head of that size."""
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertModel,
        BertTokenizer,
    )

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tokenizer = BertTokenizer(vocab=str(folder / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size or len(VOCAB),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    if head_labels:
        config.num_labels = head_labels
        model = BertForSequenceClassification(config)
    else:
        model = BertModel(config)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A base encoder without a task head (distill fine-tunes it first)."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


# The tiny teacher's recipe, pinned: the tests do not follow changes of the default recipe (which suits
# real BERTs, not this tiny one).
TINY_TEACHER_RECIPE = dict(
    teacher_epochs=6,
    teacher_lr=3e-3,
    teacher_batch_size=16,
    teacher_schedule="linear",
    teacher_warmup_ratio=0.1,
    teacher_patience=0,
)


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory, tiny_bert, toy_files):
    """The tiny BERT fine-tuned on the toy task and stored with its card (once per session)."""
    from eqspike.distill.config import RunConfig
    from eqspike.distill.prepare import prepare_data
    from eqspike.teacher.store import load_teacher

    store = tmp_path_factory.mktemp("teacher_store")
    # Its epoch is chosen on the dev set: the 10 examples a selection split would hold out of 96 are too
    # few to tell its epochs apart (test_selection.py tests the held-out split itself).
    config = RunConfig(
        teacher=str(tiny_bert),
        train_file=str(toy_files[0]),
        validation_file=str(toy_files[1]),
        teacher_store=str(store),
        **TINY_TEACHER_RECIPE,
        selection="dev",
        max_seq_length=32,
        device="cpu",
    )
    data = prepare_data(config, log=lambda *_: None)
    # The new classifier head is drawn from the global RNG when the model loads: seeded, the teacher is
    # the same whichever tests ran before (`eqspike distill` seeds before loading it too).
    torch.manual_seed(0)
    teacher = load_teacher(config.teacher_spec(), data.task, torch.device("cpu"), data.splits, data.train, log=lambda *_: None)
    return teacher


QUIET = dict(log=lambda *_: None)


def tiny_config(tiny_teacher, toy_files, output_dir, **changes):
    """A RunConfig for a seconds-long distillation of the tiny teacher on the toy task."""
    from eqspike.distill.config import RunConfig

    base = dict(
        teacher=tiny_teacher.path,
        train_file=str(toy_files[0]),
        validation_file=str(toy_files[1]),
        max_seq_length=32,
        student_layers=2,
        batch_size=16,
        eval_batch_size=32,
        intermediate_epochs=1,
        prediction_epochs=2,
        intermediate_lr=1e-3,
        prediction_lr=1e-3,
        time_steps=16,
        calibration_examples=32,
        logging_steps=2,
        save_steps=4,
        output_dir=str(output_dir),
        device="cpu",
        seed=7,
    )
    base.update(changes)
    return RunConfig(**base)
