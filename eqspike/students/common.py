"""What both students share: their transformers config (the encoder shape a student takes from its
teacher), base model class and output, the embeddings and MPNet's relative position bias. The teacher
initialisation is in ``initialization``, BERT's attention helpers in ``attention``, the checks that
refuse a broken saved student by file name in ``saved_files``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from transformers import PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from eqspike.errors import EqspikeError, check_choice, check_int_at_least, check_positive
from eqspike.students.attention import classification_head
from eqspike.students.families import FAMILIES, HEAD_ACTIVATIONS
from eqspike.students.saved_files import CONFIG_NAME, StudentFileError, check_student_files

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


def relative_attention_bias(config: StudentConfig) -> nn.Embedding | None:
    """MPNet's relative position bias, one value per bucket and head (shared by every block), or None."""
    buckets = config.relative_attention_num_buckets
    return nn.Embedding(buckets, config.num_attention_heads) if buckets else None
