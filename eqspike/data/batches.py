"""A task split tokenised by the teacher's tokenizer, and its batches: shuffled per (seed, epoch) for
training, sorted by length for evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from eqspike.data.tasks import Example


# ---------------------------------------------------------------------------- tokenisation and batches
class Ragged(Sequence):
    """Sequences of integers of different lengths in one flat array and their offsets: sequence i is
    ``values[offsets[i]:offsets[i + 1]]`` (a numpy view). A few bytes per token, where Python lists of
    ints take about 36."""

    def __init__(self, values: np.ndarray, offsets: np.ndarray) -> None:
        self.values, self.offsets = values, offsets

    @classmethod
    def of(cls, sequences: Sequence[Sequence[int]], dtype: Any) -> Ragged:
        values = np.fromiter((v for sequence in sequences for v in sequence), dtype)
        lengths = np.fromiter((len(sequence) for sequence in sequences), np.int64, len(sequences))
        return cls(values, np.concatenate([[0], np.cumsum(lengths)]))

    @classmethod
    def concatenate(cls, parts: Sequence[Ragged], dtype: Any) -> Ragged:
        """The sequences of ``parts``, in order."""
        lengths = np.concatenate([np.zeros(0, np.int64), *(part.lengths() for part in parts)])
        return cls(
            np.concatenate([np.zeros(0, dtype), *(part.values for part in parts)]), np.concatenate([[0], np.cumsum(lengths)])
        )

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> np.ndarray:
        return self.values[self.offsets[index] : self.offsets[index + 1]]

    def __iter__(self):
        for index in range(len(self)):
            yield self[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Ragged):
            return np.array_equal(self.offsets, other.offsets) and np.array_equal(self.values, other.values)
        if isinstance(other, Sequence):
            return len(self) == len(other) and all(list(a) == list(b) for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # compared by value

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + self.offsets.nbytes


class EncodedSplit(torch.utils.data.Dataset):
    """Token ids of one split (unpadded, ``Ragged``) and labels. The texts are tokenised ``chunk`` at a
    time, so that memory grows by a few bytes per token however large the split."""

    def __init__(self, examples: Sequence[Example], tokenizer: Any, max_seq_length: int, chunk: int = 10_000) -> None:
        pairs = any(e.text_b is not None for e in examples)
        ids, types = [], []
        for start in range(0, len(examples), chunk):
            part = examples[start : start + chunk]
            encoded = tokenizer(
                [e.text_a for e in part], [e.text_b for e in part] if pairs else None, truncation=True, max_length=max_seq_length
            )
            ids.append(Ragged.of(encoded["input_ids"], np.int32))
            types.append(Ragged.of(encoded.get("token_type_ids") or [[0] * len(x) for x in encoded["input_ids"]], np.int8))
        self.input_ids, self.token_type_ids = Ragged.concatenate(ids, np.int32), Ragged.concatenate(types, np.int8)
        self.labels = [e.label for e in examples]
        self.pad_token_id = tokenizer.pad_token_id or 0

    @property
    def nbytes(self) -> int:
        """Bytes the token ids and types take."""
        return self.input_ids.nbytes + self.token_type_ids.nbytes

    def __len__(self) -> int:
        return len(self.labels)

    def update_digest(self, digest: Any, labels: bool = True) -> None:
        """Feed the token ids, token types (and labels) into a hashlib digest: a fingerprint of the
        data that anything derived from it (a stored teacher, a teacher cache) is keyed by."""
        for ids, types in zip(self.input_ids, self.token_type_ids):
            digest.update(np.asarray(ids, dtype=np.int64).tobytes())
            digest.update(np.asarray(types, dtype=np.int8).tobytes())
        if labels:
            digest.update(np.asarray(self.labels, dtype=np.float64).tobytes())

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, int | float, int]:
        return self.input_ids[index], self.token_type_ids[index], self.labels[index], index

    def collate(self, items: list[tuple[Sequence[int], Sequence[int], int | float, int]]) -> dict[str, Tensor]:
        """Pad to the longest sequence of the batch."""
        length = max(len(ids) for ids, *_ in items)
        input_ids = torch.full((len(items), length), self.pad_token_id, dtype=torch.long)
        token_type_ids = torch.zeros((len(items), length), dtype=torch.long)
        attention_mask = torch.zeros((len(items), length), dtype=torch.long)
        for row, (ids, types, _, _) in enumerate(items):
            input_ids[row, : len(ids)] = torch.as_tensor(ids)
            token_type_ids[row, : len(types)] = torch.as_tensor(types)
            attention_mask[row, : len(ids)] = 1
        labels = [label for _, _, label, _ in items]
        dtype = torch.float if isinstance(labels[0], float) else torch.long
        return {
            "input_ids": input_ids,
            "token_type_ids": token_type_ids,
            "attention_mask": attention_mask,
            "labels": torch.tensor(labels, dtype=dtype),
            "index": torch.tensor([i for *_, i in items]),
        }


def batch_order(size: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffled batches of indices for one epoch; a function of (seed, epoch) only, so that a resumed
    run sees exactly the batches the interrupted one would have."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(size, generator=generator).tolist()
    return [order[i : i + batch_size] for i in range(0, size, batch_size)]


def iterate_batches(split: EncodedSplit, batches: Sequence[Sequence[int]]) -> Iterator[dict[str, Tensor]]:
    for indices in batches:
        yield split.collate([split[i] for i in indices])


def sequential_batches(split: EncodedSplit, batch_size: int) -> Iterator[dict[str, Tensor]]:
    """Evaluation order, sorted by length so that padding is small; ``index`` keeps the original order."""
    lengths = split.input_ids.lengths()
    order = sorted(range(len(split)), key=lambda i: lengths[i])
    return iterate_batches(split, [order[i : i + batch_size] for i in range(0, len(order), batch_size)])
