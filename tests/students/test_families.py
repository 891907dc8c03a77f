"""Teachers of every supported encoder family: a student initialised from all of a teacher's layers
computes the teacher's function (dense, and spiking at its unclipped equilibrium), the distilled
targets are what the student's own layers produce, and distillation runs end to end."""

import json

import pytest
import torch

from eqspike.errors import EqspikeError
from eqspike.students.dense_bert import DenseBertForSequenceClassification
from eqspike.students.families import FAMILIES, SUPPORTED_MODEL_TYPES, family_of
from eqspike.students.spikelm import SpikeLMForSequenceClassification
from eqspike.students.spiking_bert import SpikingBertForSequenceClassification
from eqspike.teacher.targets import teacher_targets
from tests.conftest import POSITIVE, QUIET, VOCAB, tiny_config

SHAPE = dict(
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
    num_labels=3,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def tiny_family_model(model_type: str, vocab_size: int = len(VOCAB), pad_token_id: int = 0):
    """A randomly initialised ...ForSequenceClassification of the family, 32 wide (ELECTRA's embeddings 16)."""
    import transformers as t

    torch.manual_seed(0)
    if model_type == "distilbert":
        config = t.DistilBertConfig(
            vocab_size=vocab_size,
            dim=32,
            n_layers=3,
            n_heads=4,
            hidden_dim=64,
            max_position_embeddings=64,
            num_labels=3,
            dropout=0.0,
            attention_dropout=0.0,
            seq_classif_dropout=0.0,
            pad_token_id=pad_token_id,
        )
    else:
        classes = {
            "bert": (t.BertConfig, t.BertForSequenceClassification),
            "roberta": (t.RobertaConfig, t.RobertaForSequenceClassification),
            "xlm-roberta": (t.XLMRobertaConfig, t.XLMRobertaForSequenceClassification),
            "electra": (t.ElectraConfig, t.ElectraForSequenceClassification),
            "mpnet": (t.MPNetConfig, t.MPNetForSequenceClassification),
        }
        extra = {"embedding_size": 16} if model_type == "electra" else {}
        config = classes[model_type][0](vocab_size=vocab_size, hidden_size=32, pad_token_id=pad_token_id, **SHAPE, **extra)
    config._attn_implementation = "eager"
    model = t.AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    with torch.no_grad():  # LayerNorms and biases away from 1 and 0, so that a part copied wrong shows
        for name, parameter in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or name.endswith("bias"):
                parameter.add_(0.1 * torch.randn_like(parameter))
            if "relative_attention_bias" in name:  # MPNet's: large enough to move the logits
                parameter.mul_(50)
    return model.eval()


def padded_batch(pad: int):
    torch.manual_seed(1)
    ids = torch.randint(5, len(VOCAB), (3, 9))
    mask = torch.ones_like(ids)
    ids[1, 6:], mask[1, 6:] = pad, 0
    ids[2, 4:], mask[2, 4:] = pad, 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def pad_of(model_type: str) -> int:
    return 1 if model_type in ("roberta", "xlm-roberta", "mpnet") else 0


@pytest.mark.parametrize("model_type", SUPPORTED_MODEL_TYPES)
def test_a_dense_student_of_all_the_teachers_layers_computes_the_teacher(model_type):
    pad = pad_of(model_type)
    teacher = tiny_family_model(model_type, pad_token_id=pad)
    student = DenseBertForSequenceClassification.from_teacher(teacher).eval()
    assert student.config.family == family_of(model_type).name
    batch = padded_batch(pad)
    with torch.no_grad():
        expected = teacher_targets(teacher, batch, [1, 2, 3])
        out = student(**batch, output_attention_scores=True)
    real = batch["attention_mask"].bool()
    assert torch.allclose(out.logits, expected["logits"], atol=1e-5)
    for mine, theirs in zip(out.hidden_values, expected["hidden"]):
        assert torch.allclose(mine[real], theirs[real], atol=1e-5)
    keys = real[:, None, None, :].expand_as(expected["scores"][0])
    for mine, theirs in zip(out.attention_scores, expected["scores"]):
        assert torch.allclose(mine[keys], theirs[keys], atol=1e-5)


@pytest.mark.parametrize("model_type", ["roberta", "distilbert", "electra", "mpnet"])
def test_a_spiking_student_at_its_unclipped_equilibrium_computes_the_teacher(model_type):
    """Thresholds too large to clip anything: the exact equilibrium is the ANN, the teacher itself."""
    pad = pad_of(model_type)
    teacher = tiny_family_model(model_type, pad_token_id=pad)
    student = SpikingBertForSequenceClassification.from_teacher(teacher, signed=True).eval()
    with torch.no_grad():
        for name in student.population_names(student.config.num_hidden_layers):
            student.threshold(name).fill_(1e3)
        batch = padded_batch(pad)
        out = student(**batch, mode="solve")
        assert torch.allclose(out.logits, teacher(**batch).logits, atol=1e-4)


@pytest.mark.parametrize("model_type", ["distilbert", "mpnet"])
def test_spikelm_copies_every_family(model_type):
    """SpikeLM's student takes the same parts: its full-precision layers hold the teacher's weights."""
    teacher = tiny_family_model(model_type, pad_token_id=pad_of(model_type))
    student = SpikeLMForSequenceClassification.from_teacher(teacher, num_hidden_layers=2)
    family = FAMILIES[student.config.family]
    layer = family.layer_parts(family.layer_list(teacher)[student.config.teacher_layers[-1] - 1])
    assert torch.equal(student.blocks[-1].intermediate.linear.weight, layer["intermediate"].weight)
    assert (student.relative_attention_bias is not None) == (model_type == "mpnet")


def test_a_teacher_of_another_family_is_refused_by_name():
    with pytest.raises(EqspikeError, match=r"'deberta-v2' model: DeBERTa's disentangled attention.*bert, roberta"):
        family_of("deberta-v2")
    with pytest.raises(EqspikeError, match=r"'gpt2' model; eqspike distils the encoder families"):
        family_of("gpt2")


def test_check_teacher_config_refuses_a_deberta_directory_before_any_work(tmp_path):
    from transformers import DebertaV2Config

    from eqspike.distill.config import RunConfig
    from eqspike.teacher.store import check_teacher_config

    DebertaV2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64).save_pretrained(tmp_path)
    with pytest.raises(EqspikeError, match=r"teacher .* is a 'deberta-v2' model"):
        check_teacher_config(RunConfig(teacher=str(tmp_path)).teacher_spec())


def save_family_teacher(model_type: str, folder):
    """A tiny teacher of the family with a 2-label head and a word-level tokenizer whose [PAD] is the
    model's padding index, saved with save_pretrained."""
    from transformers import BertTokenizer

    pad = pad_of(model_type)
    vocab = list(VOCAB)
    vocab[0], vocab[pad] = vocab[pad], vocab[0]  # [PAD] at the family's padding index
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    model = tiny_family_model(model_type, pad_token_id=pad)
    model.config.num_labels = 2
    model = type(model)(model.config)  # a 2-label head
    model.save_pretrained(folder)
    BertTokenizer(vocab=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["roberta", "distilbert", "electra", "mpnet"])
def test_distillation_runs_from_a_teacher_of_every_family(model_type, toy_files, tmp_path):
    from eqspike.distill.trainer import Distiller
    from eqspike.students import load_student

    teacher = save_family_teacher(model_type, tmp_path / "teacher")

    class Folder:  # tiny_config's view of a teacher
        path = str(teacher)

    run = tmp_path / "run"
    Distiller(
        tiny_config(Folder, toy_files, run, time_steps=4, intermediate_epochs=1, prediction_epochs=1, cache_teacher=True), **QUIET
    ).run()
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["student_score"] <= 1.0 and metrics["student_energy_ratio"] > 0
    student = load_student(run / "student")
    assert student.config.family == family_of(model_type).name
    assert student(input_ids=torch.tensor([[2, VOCAB.index(POSITIVE[0]), 3]])).logits.shape == (1, 2)


# ---------------------------------------------------------------------------- students narrower than their teacher
NARROW = {"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 24}


def test_a_narrower_student_starts_from_evenly_spaced_teacher_channels_and_heads():
    from eqspike.students.initialization import WidthSelection, evenly_spaced, head_map

    teacher = tiny_family_model("bert")
    student = SpikingBertForSequenceClassification.from_teacher(teacher, 2, NARROW)
    c = student.config
    assert (c.hidden_size, c.num_attention_heads, c.intermediate_size) == (16, 2, 24)
    assert (c.teacher_hidden_size, c.teacher_num_attention_heads, c.teacher_intermediate_size) == (32, 4, 64)
    pick = WidthSelection.of(c)
    assert pick.hidden.tolist() == evenly_spaced(16, 32).tolist() and pick.hidden[0] == 0 and pick.hidden[-1] == 31
    assert head_map(2, 4) == [0, 2] == pick.heads
    # heads of the same size: teacher heads 0 and 2 whole; narrower heads: each head's dims evenly spaced
    assert pick.attention.tolist() == list(range(0, 8)) + list(range(16, 24))
    four = WidthSelection.of(
        SpikingBertForSequenceClassification.from_teacher(teacher, 2, {"hidden_size": 16, "num_attention_heads": 4}).config
    )
    assert four.heads == [0, 1, 2, 3] and four.attention.tolist()[:8] == [0, 2, 5, 7, 8, 10, 13, 15]
    layer = teacher.bert.encoder.layer[c.teacher_layers[0] - 1]
    block = student.blocks[0]
    assert torch.equal(block.query.weight, layer.attention.self.query.weight[pick.attention][:, pick.hidden])
    assert torch.equal(block.output.weight, layer.output.dense.weight[pick.hidden][:, pick.intermediate])
    assert torch.equal(block.output_norm.weight, layer.output.LayerNorm.weight[pick.hidden])
    assert torch.equal(student.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight[:, pick.hidden])
    # W_h starts as the selection's inverse: the student's channel j lands on the teacher channel it came from
    v = torch.randn(2, 5, 16)
    mapped = student.in_teacher_space([v, v])
    assert all(m.shape == (2, 5, 32) for m in mapped)
    assert torch.equal(mapped[1][..., pick.hidden], v)
    others = [i for i in range(32) if i not in pick.hidden.tolist()]
    assert torch.count_nonzero(mapped[1][..., others]) == 0


def test_a_student_of_the_teachers_width_has_no_projections():
    student = SpikingBertForSequenceClassification.from_teacher(tiny_family_model("bert"), 2)
    values = [torch.randn(1, 3, 32)]
    assert student.hidden_to_teacher is None and student.in_teacher_space(values) is values


def test_the_attention_loss_compares_student_head_j_with_teacher_head_j_times_the_ratio():
    from types import SimpleNamespace

    from eqspike.distill.losses import LossWeights, intermediate_loss

    torch.manual_seed(0)
    mask = torch.ones(1, 4)
    teacher_scores = torch.randn(1, 4, 4, 4)
    hidden = [torch.zeros(1, 4, 8)]
    config = LossWeights(hidden_weight=0.0, attention_weight=1.0)
    matching = SimpleNamespace(hidden_values=hidden, attention_scores=[teacher_scores[:, [0, 2]]])
    other = SimpleNamespace(hidden_values=hidden, attention_scores=[teacher_scores[:, [1, 3]]])
    targets = {"hidden": hidden, "scores": [teacher_scores]}
    assert intermediate_loss(matching, targets, mask, config)["attention"] == 0
    assert intermediate_loss(other, targets, mask, config)["attention"] > 0


def test_the_teachers_energy_is_counted_at_its_own_width():
    from eqspike.students.energy import StudentEnergy

    teacher = tiny_family_model("bert")
    narrow = StudentEnergy.of(SpikingBertForSequenceClassification.from_teacher(teacher, 2, NARROW).config)
    full = StudentEnergy.of(SpikingBertForSequenceClassification.from_teacher(teacher, 2).config)
    assert narrow.teacher_pj(20) == full.teacher_pj(20)
    assert narrow.dense_network_pj(20) < full.dense_network_pj(20)


@pytest.mark.parametrize(
    "widths, message",
    [
        ({"num_attention_heads": 3}, r"student_heads=3 does not divide the teacher's 4 heads"),
        ({"hidden_size": 48}, r"student_hidden=48 is wider than the teacher's 32; choose at most 32"),
        ({"hidden_size": 18, "num_attention_heads": 4}, r"student_hidden=18 is not a multiple of student_heads=4"),
    ],
)
def test_a_narrower_student_that_cannot_map_onto_its_teacher_is_refused(widths, message):
    with pytest.raises(ValueError, match=message):
        SpikingBertForSequenceClassification.from_teacher(tiny_family_model("bert"), 2, widths)


def test_the_command_line_refuses_a_head_count_that_does_not_divide_before_any_work(tiny_bert, toy_files, tmp_path, capsys):
    from tests.app.test_bad_input import distill_args, refused

    err = refused(
        capsys,
        *distill_args(tiny_bert, *toy_files, tmp_path / "run", "--teacher-store", tmp_path / "store", "--student-heads", "3"),
    )
    assert "student_heads=3 does not divide the teacher's 4 heads" in err
    assert not (tmp_path / "store").exists() and not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("student_type", ["eqspike", "dense"])
def test_a_narrower_student_distils_resumes_and_loads(student_type, tiny_teacher, toy_files, tmp_path):
    """Cut after a few steps and resumed: the student kept is the uninterrupted run's (its projections
    are part of the checkpoint)."""
    from safetensors.torch import load_file

    from eqspike.distill.trainer import Distiller
    from eqspike.students import load_student

    narrow = dict(student_hidden=16, student_heads=2, student_intermediate=24, time_steps=4, student_type=student_type)
    full, cut = tmp_path / "full", tmp_path / "cut"
    Distiller(tiny_config(tiny_teacher, toy_files, full, **narrow), **QUIET).run()
    assert Distiller(tiny_config(tiny_teacher, toy_files, cut, max_steps=5, **narrow), **QUIET).run()["status"] == "interrupted"
    Distiller(tiny_config(tiny_teacher, toy_files, cut, resume=True, **narrow), **QUIET).run()
    a, b = load_file(full / "student" / "model.safetensors"), load_file(cut / "student" / "model.safetensors")
    assert a.keys() == b.keys() and "hidden_to_teacher.weight" in a and all(torch.equal(a[k], b[k]) for k in a)
    student = load_student(full / "student")
    assert student.config.hidden_size == 16 and student.blocks[0].intermediate.weight.shape == (24, 16)
    # a warm start from it is refused before any work unless the widths are asked for
    from eqspike.students import check_warm_start
    from eqspike.students.saved_files import StudentFileError

    widths = {"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 24}
    assert check_warm_start(full, 2, widths) == full / "student"
    with pytest.raises(
        StudentFileError,
        match=r"hidden size 16, narrower than its teacher's 32\); pass --student-layers 2 "
        r"--student-hidden 16 --student-heads 2 --student-intermediate 24",
    ):
        check_warm_start(full, 2)
    with pytest.raises(StudentFileError, match=r"16 hidden against student_hidden=8"):
        check_warm_start(full, 2, dict(widths, hidden_size=8))
    metrics = json.loads((full / "metrics.json").read_text())
    assert metrics["student_score"] is not None


def test_the_energy_count_follows_the_family():
    """MPNet adds one add per score, block and pass (its position bias); ELECTRA its embedding projection
    (L x E x H once); BERT neither."""
    import dataclasses

    from eqspike.analysis.energy import dense_inventory
    from eqspike.students.energy import MAC_PJ, StudentEnergy

    L, T = 10, 4
    bert = StudentEnergy.of(SpikingBertForSequenceClassification.from_teacher(tiny_family_model("bert"), 2).config)
    assert bert.family_macs(L, T) == 0 and bert.embedding_size is None and not bert.relative_bias
    mpnet = StudentEnergy.of(
        SpikingBertForSequenceClassification.from_teacher(tiny_family_model("mpnet", pad_token_id=1), 2).config
    )
    plain = dataclasses.replace(mpnet, relative_bias=False)
    assert mpnet.dense_pj(L, T) - plain.dense_pj(L, T) == pytest.approx(MAC_PJ * T * 2 * 4 * L * L)
    assert mpnet.dense_network_pj(L) - plain.dense_network_pj(L) == pytest.approx(MAC_PJ * 2 * 4 * L * L)
    assert mpnet.teacher_pj(L) - plain.teacher_pj(L) == pytest.approx(MAC_PJ * 3 * 4 * L * L)  # 3 teacher layers
    electra = StudentEnergy.of(SpikingBertForSequenceClassification.from_teacher(tiny_family_model("electra"), 2).config)
    assert electra.embedding_size == 16
    assert electra.dense_network_pj(L) - dataclasses.replace(electra, embedding_size=None).dense_network_pj(L) == pytest.approx(
        MAC_PJ * L * 16 * 32
    )
    extras = [op for op in dense_inventory(electra, 2, [L]) if op.part == "embedding projection, position bias"]
    assert len(extras) == 1 and extras[0].count == pytest.approx(L * 16 * 32)
    assert not [op for op in dense_inventory(bert, 2, [L]) if op.part == "embedding projection, position bias"]


@pytest.mark.parametrize("model_type", ["roberta", "distilbert", "electra", "mpnet"])
def test_a_narrower_student_of_every_family_runs_and_maps_to_the_teachers_width(model_type):
    pad = pad_of(model_type)
    teacher = tiny_family_model(model_type, pad_token_id=pad)
    for cls in (SpikingBertForSequenceClassification, DenseBertForSequenceClassification):
        student = cls.from_teacher(teacher, 2, NARROW).eval()
        with torch.no_grad():
            out = student(**padded_batch(pad), output_attention_scores=True)
        assert out.logits.shape == (3, 3) and out.attention_scores[0].shape[1] == 2
        assert [v.shape[-1] for v in student.in_teacher_space(out.hidden_values)] == [32, 32, 32]
