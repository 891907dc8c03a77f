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
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.nn import functional as F
from transformers import PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from eqspike.errors import EqspikeError, check_choice, check_int_at_least, check_positive

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
    text_pairs: bool | None = None  # trained on pairs of texts (sentence1, sentence2), or on single texts

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.problem_type is None:
            self.problem_type = "regression" if self.num_labels == 1 else "single_label_classification"
        self.validate()

    def validate(self) -> None:
        """Refuse settings that cannot make a student (also after ``from_pretrained`` overrides)."""
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size", "num_labels"):
            check_int_at_least(name, getattr(self, name), 1)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not a multiple of num_attention_heads={self.num_attention_heads}"
            )
        check_choice("problem_type", self.problem_type, PROBLEM_TYPES)
        check_positive("layer_norm_eps", self.layer_norm_eps)

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
    """What both students share as transformers models: BERT's initialisation, the task loss, and
    loading that refuses broken files by name (``from_pretrained``)."""

    config_class = StudentConfig
    base_model_prefix = "student"
    main_input_name = "input_ids"

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
        """Logits from the values of the last block's output: BERT's pooler (dense + tanh on [CLS]) and
        the classifier, in full precision."""
        return classification_head(self.pooler, self.classifier, last_values)

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
                raise StudentFileError(f"{directory / CONFIG_NAME} does not describe a usable "
                                       f"{cls.config_class.model_type} student: {str(error).splitlines()[0][:200]}") from None
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
            raise StudentFileError(f"{directory} does not hold a usable {cls.config_class.model_type} student: "
                                   f"{str(error).splitlines()[0][:200]}") from None
        return model


class SpikingBertEmbeddings(nn.Module):
    """Word + position + token-type embeddings and LayerNorm, in full precision."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor) -> Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(x)


def teacher_shape(teacher_config: Any, num_hidden_layers: int | None = None) -> dict[str, Any]:
    """The student config fields a teacher's config fixes: its shape, labels and the layer map."""
    t = teacher_config
    layers = num_hidden_layers or t.num_hidden_layers
    return dict(
        vocab_size=t.vocab_size, hidden_size=t.hidden_size, num_hidden_layers=layers,
        num_attention_heads=t.num_attention_heads, intermediate_size=t.intermediate_size,
        max_position_embeddings=t.max_position_embeddings, type_vocab_size=t.type_vocab_size,
        layer_norm_eps=t.layer_norm_eps, pad_token_id=t.pad_token_id if t.pad_token_id is not None else 0,
        num_labels=t.num_labels, problem_type="regression" if t.num_labels == 1 else "single_label_classification",
        id2label={int(k): v for k, v in (t.id2label or {}).items()} or None,
        teacher_layers=uniform_layer_map(t.num_hidden_layers, layers), teacher_num_hidden_layers=t.num_hidden_layers,
    )


def bert_layer_parts(layer: nn.Module) -> dict[str, nn.Module]:
    """A transformers BERT layer's modules under the names of a student block's parts."""
    return {
        "query": layer.attention.self.query, "key": layer.attention.self.key, "value": layer.attention.self.value,
        "attention_output": layer.attention.output.dense, "attention_norm": layer.attention.output.LayerNorm,
        "intermediate": layer.intermediate.dense, "output": layer.output.dense, "output_norm": layer.output.LayerNorm,
    }


@torch.no_grad()
def copy_teacher_weights(student: nn.Module, teacher_model: nn.Module, modules: Mapping[str, Any] | None = None) -> None:
    """Copy the teacher's embeddings, pooler, classifier and, into student block m, teacher layer
    ``student.config.teacher_layers[m]``. ``modules`` maps each part of a block to a function that
    returns the student's module for it (query, key, value, attention_output, attention_norm,
    intermediate, output, output_norm); by default the block's attribute of that name."""
    bert = teacher_model.bert
    student.embeddings.load_state_dict(bert.embeddings.state_dict(), strict=False)
    for block, index in zip(student.blocks, student.config.teacher_layers):
        for part, module in bert_layer_parts(bert.encoder.layer[index - 1]).items():
            mine = modules[part](block) if modules is not None else getattr(block, part)
            mine.weight.copy_(module.weight)
            mine.bias.copy_(module.bias)
    if bert.pooler is not None:
        student.pooler.load_state_dict(bert.pooler.dense.state_dict())
    student.classifier.load_state_dict(teacher_model.classifier.state_dict())


# ---------------------------------------------------------------------------- attention, as in BERT
def default_masks(input_ids: Tensor, attention_mask: Tensor | None,
                  token_type_ids: Tensor | None) -> tuple[Tensor, Tensor]:
    """BERT's defaults for missing inputs: every token attended to, every token of segment 0."""
    return (torch.ones_like(input_ids) if attention_mask is None else attention_mask,
            torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids)


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


def classification_head(pooler: nn.Linear, classifier: nn.Linear, last_values: Tensor) -> Tensor:
    """BERT's head: logits from the [CLS] value of the last block (dense + tanh pooler, then the classifier)."""
    return classifier(torch.tanh(pooler(last_values[:, 0])))


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
        raise StudentFileError(f"{weights_path} is corrupted ({type(error).__name__}: "
                               f"{str(error).splitlines()[0][:120]})") from None
    bad = [name for name, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        raise StudentFileError(f"{weights_path} holds non-finite weights ({', '.join(bad[:3])}"
                               f"{', ...' if len(bad) > 3 else ''}); it cannot be used")


def uniform_layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """1-based teacher layer distilled into each student block: round((m+1) * L_T / M), m = 0..M-1."""
    if student_layers > teacher_layers:
        raise ValueError(f"the student has {student_layers} blocks but the teacher only {teacher_layers} layers")
    return [round((m + 1) * teacher_layers / student_layers) for m in range(student_layers)]
