"""What both students share: their transformers config (the encoder shape a student takes from its
teacher), base model class and output, the embeddings, the teacher initialisation (every k-th layer),
BERT's attention helpers, and the checks that refuse a broken saved student by file name.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.nn import functional as F
from transformers import PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from eqspike.errors import EqspikeError, check_choice, check_int_at_least, check_positive
from eqspike.students.families import FAMILIES, HEAD_ACTIVATIONS, family_of

CONFIG_NAME = "config.json"


WEIGHTS_NAME = "model.safetensors"


PROBLEM_TYPES = ("single_label_classification", "regression")


class StudentConfig(PreTrainedConfig):
    """What both students' configs hold: the BERT encoder shape a student shares with its teacher, its
    labels (``num_labels``, ``id2label``, ``problem_type`` of transformers) and its provenance. A
    transformers config: saved as config.json, loaded by ``AutoConfig``. Students saved before 0.2
    (config.json without ``transformers_version``) convert on load (``from_dict``)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 4
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    teacher: str | None = None
    teacher_layers: list[int] = field(default_factory=list)
    teacher_num_hidden_layers: int | None = None  # the teacher's depth (for its energy estimate)
    # the teacher's width where the student is narrower (None: the student's); distilled through W_e, W_h
    teacher_hidden_size: int | None = None
    teacher_num_attention_heads: int | None = None
    teacher_intermediate_size: int | None = None
    text_pairs: bool | None = None  # trained on pairs of texts (sentence1, sentence2), or on single texts
    # the teacher's encoder family and the details in which families differ (eqspike.students.families)
    family: str = "bert"
    hidden_act: str = "gelu"  # the FFN's activation (transformers' ACT2FN name)
    head_activation: str = "tanh"  # between the head's dense layer on [CLS] and its output layer
    position_padding_idx: int | None = None  # None: positions 0..L-1; p: p+1, p+2, ... for real tokens (RoBERTa)
    embedding_size: int | None = None  # embeddings narrower than hidden_size, projected (ELECTRA)
    relative_attention_num_buckets: int = 0  # MPNet's relative position bias (0: none)

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.problem_type is None:
            self.problem_type = "regression" if self.num_labels == 1 else "single_label_classification"
        self.validate()

    def validate(self) -> None:
        """Refuse settings that cannot make a student (also after ``from_pretrained`` overrides)."""
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "num_labels",
        ):
            check_int_at_least(name, getattr(self, name), 1)
        check_int_at_least("type_vocab_size", self.type_vocab_size, 0)
        check_int_at_least("relative_attention_num_buckets", self.relative_attention_num_buckets, 0)
        if self.embedding_size is not None:
            check_int_at_least("embedding_size", self.embedding_size, 1)
        check_choice("family", self.family, tuple(FAMILIES))
        check_choice("head_activation", self.head_activation, HEAD_ACTIVATIONS)
        check_choice("hidden_act", self.hidden_act, tuple(ACT2FN))
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not a multiple of num_attention_heads={self.num_attention_heads}"
            )
        check_choice("problem_type", self.problem_type, PROBLEM_TYPES)
        check_positive("layer_norm_eps", self.layer_norm_eps)

    @property
    def narrower(self) -> bool:
        """Whether the student's hidden width differs from its teacher's (its hidden states are then
        distilled through learned projections)."""
        return self.teacher_hidden_size is not None and self.teacher_hidden_size != self.hidden_size

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any):
        """transformers' ``from_dict``, after converting a config.json written before 0.2."""
        config_dict = dict(config_dict)
        if "transformers_version" not in config_dict:
            config_dict = cls.convert_legacy(config_dict)
        return super().from_dict(config_dict, **kwargs)

    @classmethod
    def convert_legacy(cls, data: dict[str, Any]) -> dict[str, Any]:
        """A config.json of eqspike 0.1 (a plain dataclass dump) as this class's fields."""
        if not data.get("id2label"):
            data.pop("id2label", None)  # 0.1 wrote {} for unnamed labels; num_labels says how many
        return data


@dataclass
class StudentOutput(ModelOutput):
    """A ``SequenceClassifierOutput`` (loss when labels are given, logits) with the spiking extras:
    decoded values of the embeddings and of every block's output (the distilled layers), pre-softmax
    attention scores per block (when asked for), every population's rates, the equilibrium statistics,
    spike counts and trajectories (eqspike's student, 'simulate')."""

    loss: Tensor | None = None
    logits: Tensor | None = None
    hidden_values: list[Tensor] | None = None
    attention_scores: list[Tensor] | None = None
    rates: dict[str, Tensor] | None = None
    stats: Any = None
    spike_counts: dict[str, Tensor] | None = None
    trajectory: dict[str, Tensor] | None = None


class StudentPreTrainedModel(PreTrainedModel):
    """What the students share as transformers models: BERT's initialisation, the task loss, and
    loading that refuses broken files by name (``from_pretrained``); and what a kind declares for the
    registry (``eqspike.students.STUDENTS``), which the trainer, scoring and model card read instead of
    its name."""

    config_class = StudentConfig
    base_model_prefix = "student"
    main_input_name = "input_ids"
    kind: ClassVar[str]  # its --student-type
    description: ClassVar[str]  # one line, for the model card
    spiking: ClassVar[bool] = True  # fires spikes: scored by running T steps, its energy from its spikes
    reports_energy: ClassVar[bool] = False  # metrics.json gains the energy under both conventions
    kind_settings: ClassVar[tuple[str, ...]] = ()  # run settings only this kind accepts

    @classmethod
    def train_for(cls, settings: Any) -> str | None:
        """What the student is trained for: 'time_steps' (scored while training by running T steps, under
        an energy budget if one is set) or 'infinity'; None for a kind without the choice."""
        return None

    @classmethod
    def run_name(cls, settings: Any) -> str:
        """The end of a run folder's default name."""
        raise NotImplementedError

    @classmethod
    def task_loss_only(cls, settings: Any) -> bool:
        """Whether the run trains on the task loss alone (no distillation)."""
        return False

    def _init_weights(self, module: nn.Module) -> None:
        """N(0, 0.02) weights, zero biases, unit LayerNorms (BERT's); thresholds of 1 until calibrated."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        for name, parameter in module.named_parameters(recurse=False):
            if name.startswith("threshold"):
                init.ones_(parameter)

    def head(self, last_values: Tensor) -> Tensor:
        """Logits from the values of the last block's output: act(W_p v_[CLS] + b_p), then the
        classifier, in full precision (BERT's pooler and tanh; the family's head activation)."""
        return classification_head(self.pooler, self.classifier, last_values, self.config.head_activation)

    def in_teacher_space(self, hidden_values: list[Tensor]) -> list[Tensor]:
        """The embeddings' and blocks' values as the hidden-state loss compares them with the teacher's:
        as they are, or for a narrower student W_e v_0 and W_h v_m (TinyBERT)."""
        if self.hidden_to_teacher is None:
            return hidden_values
        return [self.embeddings_to_teacher(hidden_values[0])] + [self.hidden_to_teacher(v) for v in hidden_values[1:]]

    def position_bias(self, length: int, device: torch.device) -> Tensor | float:
        """The relative position bias every block adds to its attention scores, (1, heads, L, L)
        (MPNet's: a learned value per head and bucket of the distance j - i), or 0."""
        if not self.config.relative_attention_num_buckets:
            return 0.0
        from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

        positions = torch.arange(length, device=device)
        buckets = MPNetEncoder.relative_position_bucket(
            positions[None, :] - positions[:, None], num_buckets=self.config.relative_attention_num_buckets
        )
        return self.relative_attention_bias(buckets).permute(2, 0, 1)[None]

    def task_loss(self, logits: Tensor, labels: Tensor | None) -> Tensor | None:
        """Cross-entropy on the labels, or MSE for regression (as BertForSequenceClassification)."""
        if labels is None:
            return None
        if self.config.problem_type == "regression":
            return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
        return F.cross_entropy(logits, labels)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *args: Any, **kwargs: Any):
        """transformers' ``from_pretrained``. From a local folder, config.json and model.safetensors are
        checked first, so a missing, corrupted, foreign or non-finite file is refused by name; keyword
        arguments that are config fields (``time_steps=4``, ``hysteresis=0.5``) replace the saved values
        and are checked like them."""
        directory = Path(pretrained_model_name_or_path)
        if directory.is_dir() and kwargs.get("config") is None:
            check_student_files(directory, cls.config_class.model_type)
            fields = {f.name for f in dataclasses.fields(cls.config_class)}
            overrides = {key: kwargs.pop(key) for key in list(kwargs) if key in fields}
            try:
                config = cls.config_class.from_pretrained(directory)
            except (ValueError, TypeError) as error:
                raise StudentFileError(
                    f"{directory / CONFIG_NAME} does not describe a usable "
                    f"{cls.config_class.model_type} student: {str(error).splitlines()[0][:200]}"
                ) from None
            for key, value in overrides.items():
                setattr(config, key, value)
            try:
                config.validate()
            except ValueError as error:
                given = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
                raise EqspikeError(f"cannot run {directory} with {given}: {error}") from None
            kwargs["config"] = config
        try:
            model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except (ValueError, RuntimeError) as error:  # weights that do not fit the config
            raise StudentFileError(
                f"{directory} does not hold a usable {cls.config_class.model_type} student: {str(error).splitlines()[0][:200]}"
            ) from None
        return model


class SpikingBertEmbeddings(nn.Module):
    """Word + position (+ token-type) embeddings and LayerNorm, in full precision, projected to the
    hidden size when the family's embeddings are narrower (ELECTRA). Positions count 0..L-1, or, with
    ``position_padding_idx`` p, p+1, p+2, ... over the real tokens and p on padding (RoBERTa, MPNet)."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        width = config.embedding_size or config.hidden_size
        self.padding_idx = config.position_padding_idx
        self.word_embeddings = nn.Embedding(config.vocab_size, width, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, width)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, width) if config.type_vocab_size else None
        self.LayerNorm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.projection = nn.Linear(width, config.hidden_size) if config.embedding_size else None

    def forward(self, input_ids: Tensor, token_type_ids: Tensor) -> Tensor:
        if self.padding_idx is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        else:
            real = (input_ids != self.padding_idx).long()
            positions = torch.cumsum(real, dim=1) * real + self.padding_idx
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        if self.token_type_embeddings is not None:
            x = x + self.token_type_embeddings(token_type_ids)
        x = self.LayerNorm(x)
        return x if self.projection is None else self.projection(x)


WIDTHS = {"hidden_size": "student_hidden", "num_attention_heads": "student_heads", "intermediate_size": "student_intermediate"}


def teacher_shape(
    teacher_config: Any,
    num_hidden_layers: int | None = None,
    hidden_size: int | None = None,
    num_attention_heads: int | None = None,
    intermediate_size: int | None = None,
) -> dict[str, Any]:
    """The student config fields a teacher's config fixes: its family's shape, labels and the layer map;
    with a width given, the student is that much narrower than the teacher (``check_widths``)."""
    t = teacher_config
    layers = num_hidden_layers or t.num_hidden_layers
    shape = family_of(t.model_type).shape(t)
    widths = {"hidden_size": hidden_size, "num_attention_heads": num_attention_heads, "intermediate_size": intermediate_size}
    if any(widths.values()):
        widths = {name: value or shape[name] for name, value in widths.items()}
        check_widths(shape, widths)
        shape.update(
            widths,
            teacher_hidden_size=t.hidden_size,
            teacher_num_attention_heads=t.num_attention_heads,
            teacher_intermediate_size=shape["intermediate_size"],
        )
    return dict(
        **shape,
        num_hidden_layers=layers,
        num_labels=t.num_labels,
        problem_type="regression" if t.num_labels == 1 else "single_label_classification",
        id2label={int(k): v for k, v in (t.id2label or {}).items()} or None,
        teacher_layers=uniform_layer_map(t.num_hidden_layers, layers),
        teacher_num_hidden_layers=t.num_hidden_layers,
    )


def check_widths(teacher: Mapping[str, int], student: Mapping[str, int]) -> None:
    """Refuse a student wider than its teacher, or whose heads do not map onto the teacher's: its head
    count must divide the teacher's, and its hidden width be a multiple of its head count."""
    for name, flag in WIDTHS.items():
        if student[name] > teacher[name]:
            raise ValueError(
                f"{flag}={student[name]} is wider than the teacher's {teacher[name]}; choose at most {teacher[name]}"
            )
    heads, teacher_heads = student["num_attention_heads"], teacher["num_attention_heads"]
    if teacher_heads % heads:
        raise ValueError(
            f"student_heads={heads} does not divide the teacher's {teacher_heads} heads: student head j "
            f"is distilled from teacher head j * {teacher_heads} / heads; choose a divisor of {teacher_heads}"
        )
    if student["hidden_size"] % heads:
        raise ValueError(f"student_hidden={student['hidden_size']} is not a multiple of student_heads={heads}")


def evenly_spaced(count: int, total: int) -> Tensor:
    """``count`` of ``range(total)``, evenly spaced, first and last included: round(j (total - 1) / (count - 1))."""
    if count >= total:
        return torch.arange(total)
    return torch.linspace(0, total - 1, count).round().long()


def head_map(student_heads: int, teacher_heads: int) -> list[int]:
    """The teacher head student head j is initialised from and distilled to: j * H_T / H_S."""
    return [j * (teacher_heads // student_heads) for j in range(student_heads)]


@dataclass(frozen=True)
class WidthSelection:
    """Which of the teacher's channels a narrower student's start from (weight selection: Xu et al.,
    'Initializing Models with Larger Ones', ICLR 2024): ``hidden`` of the residual stream, ``attention``
    of the query, key and value outputs (whole heads ``head_map``, each head's dimensions evenly
    spaced), ``intermediate`` of the FFN, ``heads`` for a per-head bias."""

    hidden: Tensor
    attention: Tensor
    intermediate: Tensor
    heads: list[int]

    @classmethod
    def of(cls, config: StudentConfig) -> WidthSelection:
        c = config
        teacher_hidden = c.teacher_hidden_size or c.hidden_size
        teacher_heads = c.teacher_num_attention_heads or c.num_attention_heads
        heads = head_map(c.num_attention_heads, teacher_heads)
        dims = evenly_spaced(c.head_size, teacher_hidden // teacher_heads)
        attention = torch.cat([h * (teacher_hidden // teacher_heads) + dims for h in heads])
        return cls(
            evenly_spaced(c.hidden_size, teacher_hidden),
            attention,
            evenly_spaced(c.intermediate_size, c.teacher_intermediate_size or c.intermediate_size),
            heads,
        )


def teacher_projections(config: StudentConfig) -> tuple[nn.Linear | None, nn.Linear | None]:
    """TinyBERT's W_e and W_h: the student's embeddings and hidden states mapped to the teacher's width
    for the hidden-state loss (used only in distillation), or (None, None) for a student of its width."""
    if not config.narrower:
        return None, None
    return (
        nn.Linear(config.hidden_size, config.teacher_hidden_size, bias=False),
        nn.Linear(config.hidden_size, config.teacher_hidden_size, bias=False),
    )


def _copy(target: nn.Module, source: nn.Module, rows: Tensor | None = None, columns: Tensor | None = None) -> None:
    """target <- source, or the rows (outputs) and columns (inputs) of source selected."""
    weight, bias = source.weight, source.bias
    if rows is not None:
        weight, bias = weight[rows], bias[rows]
    if columns is not None:
        weight = weight[:, columns]
    target.weight.copy_(weight)
    target.bias.copy_(bias)


@torch.no_grad()
def copy_teacher_weights(student: nn.Module, teacher_model: nn.Module, modules: Mapping[str, Any] | None = None) -> None:
    """Copy the teacher's embeddings, head (and MPNet's relative position bias) and, into student block m,
    teacher layer ``student.config.teacher_layers[m]``, wherever the teacher's family keeps them; a
    narrower student copies the channels ``WidthSelection`` picks, and its W_e, W_h start as the
    selection's inverse (student channel j -> the teacher channel it came from). ``modules`` maps each
    part of a block (``families.BLOCK_PARTS``) to a function that returns the student's module for it;
    by default the block's attribute of that name."""
    family = family_of(teacher_model.config.model_type)
    encoder = family.encoder(teacher_model)
    pick = WidthSelection.of(student.config) if student.config.teacher_hidden_size is not None else None
    hidden, attention, inner = (pick.hidden, pick.attention, pick.intermediate) if pick else (None, None, None)
    embeddings, mine = encoder.embeddings, student.embeddings
    projected = mine.projection is not None  # ELECTRA: the embeddings keep their width; the projection narrows
    embedding_columns = None if projected else hidden
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        if getattr(mine, name, None) is not None:
            weight = getattr(embeddings, name).weight
            getattr(mine, name).weight.copy_(weight if embedding_columns is None else weight[:, embedding_columns])
    _copy(mine.LayerNorm, embeddings.LayerNorm, embedding_columns)
    if projected:
        _copy(mine.projection, encoder.embeddings_project, hidden)
    selected = {
        "query": (attention, hidden),
        "key": (attention, hidden),
        "value": (attention, hidden),
        "attention_output": (hidden, attention),
        "attention_norm": (hidden, None),
        "intermediate": (inner, hidden),
        "output": (hidden, inner),
        "output_norm": (hidden, None),
    }
    layers = family.layer_list(teacher_model)
    for block, index in zip(student.blocks, student.config.teacher_layers):
        for part, module in family.layer_parts(layers[index - 1]).items():
            _copy(modules[part](block) if modules is not None else getattr(block, part), module, *selected[part])
    dense, out = family.head_modules(teacher_model)
    if dense is not None:
        _copy(student.pooler, dense, hidden, hidden)
    _copy(student.classifier, out, None, hidden)
    if family.relative_attention:
        bias = encoder.encoder.relative_attention_bias.weight
        student.relative_attention_bias.weight.copy_(bias if pick is None else bias[:, pick.heads])
    if student.config.narrower:
        for projection in (student.embeddings_to_teacher, student.hidden_to_teacher):
            projection.weight.zero_()
            projection.weight[hidden, torch.arange(len(hidden))] = 1.0


# ---------------------------------------------------------------------------- attention, as in BERT
def default_masks(input_ids: Tensor, attention_mask: Tensor | None, token_type_ids: Tensor | None) -> tuple[Tensor, Tensor]:
    """BERT's defaults for missing inputs: every token attended to, every token of segment 0."""
    return (
        torch.ones_like(input_ids) if attention_mask is None else attention_mask,
        torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids,
    )


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(..., L, H) -> (..., heads, L, H / heads)."""
    return x.view(*x.shape[:-1], heads, x.shape[-1] // heads).transpose(-3, -2)


def merge_heads(x: Tensor) -> Tensor:
    """(..., heads, L, size) -> (..., L, heads * size)."""
    x = x.transpose(-3, -2)
    return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])


def attention_scores(q: Tensor, k: Tensor, heads: int) -> Tensor:
    """Scaled dot-product scores per head, Q K^T / sqrt(d): (..., L, H) x 2 -> (..., heads, L, L)."""
    return split_heads(q, heads) @ split_heads(k, heads).transpose(-1, -2) / math.sqrt(q.shape[-1] // heads)


def key_padding_mask(attention_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """The additive mask that keeps softmax off pad keys: 0 for real tokens, the dtype's min for pads,
    shaped (B, 1, 1, L) to broadcast over heads and queries."""
    mask = torch.zeros(attention_mask.shape, dtype=dtype, device=attention_mask.device)
    return mask.masked_fill(attention_mask == 0, torch.finfo(dtype).min)[:, None, None, :]


def relative_attention_bias(config: StudentConfig) -> nn.Embedding | None:
    """MPNet's relative position bias, one value per bucket and head (shared by every block), or None."""
    buckets = config.relative_attention_num_buckets
    return nn.Embedding(buckets, config.num_attention_heads) if buckets else None


def classification_head(pooler: nn.Linear, classifier: nn.Linear, last_values: Tensor, activation: str = "tanh") -> Tensor:
    """The family's head: logits = classifier(act(pooler(v_[CLS]))) on the [CLS] value of the last block
    (BERT's pooler with tanh; RoBERTa's and MPNet's dense with tanh; DistilBERT's relu; ELECTRA's gelu)."""
    return classifier(_HEAD_ACTIVATIONS[activation](pooler(last_values[:, 0])))


_HEAD_ACTIVATIONS = {"tanh": torch.tanh, "relu": F.relu, "gelu": F.gelu}


class StudentFileError(EqspikeError):
    """A saved student's files are missing, corrupted or not finite (the message names the file)."""


def check_student_files(directory: str | Path, model_type: str) -> None:
    """Refuse a saved student by file name: config.json or model.safetensors missing, unreadable, of
    another model type, or holding non-finite weights."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    if not config_path.is_file():
        raise StudentFileError(f"{directory} is not a saved student: {CONFIG_NAME} is missing")
    try:
        data = json.loads(config_path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise StudentFileError(f"{config_path} is corrupted: {str(error).splitlines()[0][:120]}") from None
    if not isinstance(data, dict) or data.get("model_type") != model_type:
        kind = data.get("model_type") if isinstance(data, dict) else None
        raise StudentFileError(f"{directory} is not a {model_type} student: model_type is {kind!r}")
    if not weights_path.is_file():
        raise StudentFileError(f"{directory} has no {WEIGHTS_NAME}")
    try:
        state = load_file(str(weights_path))
    except Exception as error:  # safetensors raises its own error types for truncated or garbled files
        raise StudentFileError(
            f"{weights_path} is corrupted ({type(error).__name__}: {str(error).splitlines()[0][:120]})"
        ) from None
    bad = [name for name, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        raise StudentFileError(
            f"{weights_path} holds non-finite weights ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); it cannot be used"
        )


def uniform_layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """1-based teacher layer distilled into each student block: round((m+1) * L_T / M), m = 0..M-1."""
    if student_layers > teacher_layers:
        raise ValueError(f"the student has {student_layers} blocks but the teacher only {teacher_layers} layers")
    return [round((m + 1) * teacher_layers / student_layers) for m in range(student_layers)]
