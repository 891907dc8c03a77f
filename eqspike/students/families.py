"""The encoder families a student can be distilled from, and where each keeps the parts a student
copies and distils: its layers (query, key, value, attention output, FFN, the two LayerNorms), its
embeddings, its classification head and, for MPNet, the relative position bias of its attention.

Every supported family computes the same post-LayerNorm encoder block,

    x' = LN(W_O softmax(Q K^T / sqrt(d) + bias + mask) V + x),   y = LN(W_2 act(W_1 x' ) + x'),

and differs only in names and in four details a student's config records:

    family       positions                token types  embeddings        bias          head (on [CLS])
    bert         0 .. L-1                 yes          word+pos+type, LN  -            tanh(pooler) -> classifier
    roberta      pad+1 .. (RoBERTa rule)  type 0 only  as BERT            -            tanh(dense) -> out_proj
    xlm-roberta  as roberta
    distilbert   0 .. L-1                 none         word+pos, LN       -            relu(pre_classifier) -> classifier
    electra      0 .. L-1                 yes          as BERT, projected -            gelu(dense) -> out_proj
    mpnet        pad+1 .. (RoBERTa rule)  none         word+pos, LN       relative     tanh(dense) -> out_proj

DeBERTa (disentangled attention: content and position attend separately) computes another block, and
is refused by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from eqspike.errors import EqspikeError

# the student block's parts, in the order a block holds them
BLOCK_PARTS = ("query", "key", "value", "attention_output", "attention_norm", "intermediate", "output", "output_norm")
HEAD_ACTIVATIONS = ("tanh", "relu", "gelu")
_DISENTANGLED = (
    "DeBERTa's disentangled attention (content and relative position attend separately) is another block than the student's"
)
REFUSED = {"deberta": _DISENTANGLED, "deberta-v2": _DISENTANGLED}


class FamilyError(EqspikeError):
    """A model of an encoder family eqspike cannot distil (the message names the family and the choices)."""


def _get(module: nn.Module, path: str) -> Any:
    for name in path.split("."):
        module = getattr(module, name)
    return module


@dataclass(frozen=True)
class EncoderFamily:
    """Where one family keeps what a student copies, and what its config calls its shape."""

    name: str
    model_types: tuple[str, ...]
    base: str  # the encoder's attribute in the family's *ForSequenceClassification
    layers: str  # the layer list, from the encoder
    parts: Mapping[str, str]  # student block part -> path in a layer
    head: tuple[str, str]  # (dense before the activation, the output layer), from the classification model
    head_activation: str = "tanh"
    position_offset: bool = False  # positions counted from the padding index + 1 (RoBERTa's rule)
    token_types: bool = True
    relative_attention: bool = False  # MPNet: one relative position bias, shared by every layer
    fixed_padding_idx: int | None = None  # where RoBERTa's rule counts from when not the pad token (MPNet: 1)
    projected_embeddings: bool = False  # embeddings of their own width, projected to the hidden size (ELECTRA)
    shape_names: Mapping[str, str] | None = None  # student field -> the family config's name, where it differs

    # ------------------------------------------------------------------ a model of the family
    def encoder(self, model: nn.Module) -> nn.Module:
        return getattr(model, self.base)

    def layer_list(self, model: nn.Module) -> nn.ModuleList:
        return _get(self.encoder(model), self.layers)

    def layer_parts(self, layer: nn.Module) -> dict[str, nn.Module]:
        """One layer's modules under the student block's part names."""
        return {part: _get(layer, path) for part, path in self.parts.items()}

    def head_modules(self, model: nn.Module) -> tuple[nn.Module | None, nn.Module]:
        """(dense before the activation, or None where the model has none; output layer)."""
        dense, out = self.head
        try:
            dense = _get(model, dense)
        except AttributeError:  # a BERT saved without its pooler
            dense = None
        return dense, _get(model, out)

    def position_bias(self, model: nn.Module, hidden: Tensor) -> Tensor | None:
        """The relative position bias the family adds to every layer's attention scores ((1 or B, heads,
        L, L)), or None."""
        if not self.relative_attention:
            return None
        return self.encoder(model).encoder.compute_position_bias(hidden)

    def max_length(self, config: Any) -> int:
        """The longest sequence the family's positions allow: RoBERTa's rule spends p + 1 of them."""
        if not self.position_offset:
            return config.max_position_embeddings
        return config.max_position_embeddings - self.padding_idx(config) - 1

    def padding_idx(self, config: Any) -> int | None:
        """Where positions start counting (RoBERTa's rule), or None (0..L-1)."""
        if not self.position_offset:
            return None
        return config.pad_token_id if self.fixed_padding_idx is None else self.fixed_padding_idx

    def shape(self, config: Any) -> dict[str, Any]:
        """The student config fields the family's config fixes (besides labels and the layer map)."""
        name = lambda field: (self.shape_names or {}).get(field, field)  # noqa: E731
        fields = {
            field: getattr(config, name(field))
            for field in ("vocab_size", "hidden_size", "num_attention_heads", "intermediate_size", "max_position_embeddings")
        }
        pad = getattr(config, "pad_token_id", None)
        fields.update(
            type_vocab_size=getattr(config, "type_vocab_size", 1) if self.token_types else 0,
            layer_norm_eps=getattr(config, "layer_norm_eps", 1e-12),
            pad_token_id=pad if pad is not None else 0,
            hidden_act=getattr(config, name("hidden_act")),
            head_activation=self.head_activation,
            position_padding_idx=self.padding_idx(config),
            embedding_size=config.embedding_size if self.projected_embeddings else None,
            relative_attention_num_buckets=config.relative_attention_num_buckets if self.relative_attention else 0,
            family=self.name,
        )
        if fields["embedding_size"] == fields["hidden_size"]:
            fields["embedding_size"] = None  # no projection (ElectraModel has none then)
        return fields


_BERT_PARTS = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention_output": "attention.output.dense",
    "attention_norm": "attention.output.LayerNorm",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
    "output_norm": "output.LayerNorm",
}

FAMILIES: dict[str, EncoderFamily] = {
    family.name: family
    for family in (
        EncoderFamily("bert", ("bert",), "bert", "encoder.layer", _BERT_PARTS, ("bert.pooler.dense", "classifier")),
        EncoderFamily(
            "roberta",
            ("roberta", "xlm-roberta"),
            "roberta",
            "encoder.layer",
            _BERT_PARTS,
            ("classifier.dense", "classifier.out_proj"),
            position_offset=True,
        ),
        EncoderFamily(
            "distilbert",
            ("distilbert",),
            "distilbert",
            "transformer.layer",
            {
                "query": "attention.q_lin",
                "key": "attention.k_lin",
                "value": "attention.v_lin",
                "attention_output": "attention.out_lin",
                "attention_norm": "sa_layer_norm",
                "intermediate": "ffn.lin1",
                "output": "ffn.lin2",
                "output_norm": "output_layer_norm",
            },
            ("pre_classifier", "classifier"),
            head_activation="relu",
            token_types=False,
            shape_names={"intermediate_size": "hidden_dim", "hidden_act": "activation"},
        ),
        EncoderFamily(
            "electra",
            ("electra",),
            "electra",
            "encoder.layer",
            _BERT_PARTS,
            ("classifier.dense", "classifier.out_proj"),
            head_activation="gelu",
            projected_embeddings=True,
        ),
        EncoderFamily(
            "mpnet",
            ("mpnet",),
            "mpnet",
            "encoder.layer",
            {
                "query": "attention.attn.q",
                "key": "attention.attn.k",
                "value": "attention.attn.v",
                "attention_output": "attention.attn.o",
                "attention_norm": "attention.LayerNorm",
                "intermediate": "intermediate.dense",
                "output": "output.dense",
                "output_norm": "output.LayerNorm",
            },
            ("classifier.dense", "classifier.out_proj"),
            position_offset=True,
            token_types=False,
            relative_attention=True,
            fixed_padding_idx=1,
        ),
    )
}
SUPPORTED_MODEL_TYPES = tuple(t for family in FAMILIES.values() for t in family.model_types)


def family_of(model_type: str | None, source: str = "the teacher") -> EncoderFamily:
    """The family of a transformers ``model_type``; anything else is refused by name."""
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    why = REFUSED.get(model_type or "")
    raise FamilyError(
        f"{source} is a {model_type!r} model"
        + (f": {why}" if why else "")
        + f"; eqspike distils the encoder families {', '.join(SUPPORTED_MODEL_TYPES)} "
        f"(BERT, MiniLM and TinyBERT are 'bert')"
    )
