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
class EncodedSplit(torch.utils.data.Dataset):
    """Token ids of one split (unpadded) and labels."""

    def __init__(self, examples: Sequence[Example], tokenizer: Any, max_seq_length: int) -> None:
        texts_a = [e.text_a for e in examples]
        texts_b = [e.text_b for e in examples] if any(e.text_b is not None for e in examples) else None
        encoded = tokenizer(texts_a, texts_b, truncation=True, max_length=max_seq_length)
        self.input_ids: list[list[int]] = encoded["input_ids"]
        self.token_type_ids: list[list[int]] = encoded.get("token_type_ids") or [[0] * len(x) for x in self.input_ids]
        self.labels = [e.label for e in examples]
        self.pad_token_id = tokenizer.pad_token_id or 0

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

    def __getitem__(self, index: int) -> tuple[list[int], list[int], int | float, int]:
        return self.input_ids[index], self.token_type_ids[index], self.labels[index], index

    def collate(self, items: list[tuple[list[int], list[int], int | float, int]]) -> dict[str, Tensor]:
        """Pad to the longest sequence of the batch."""
        length = max(len(ids) for ids, *_ in items)
        input_ids = torch.full((len(items), length), self.pad_token_id, dtype=torch.long)
        token_type_ids = torch.zeros((len(items), length), dtype=torch.long)
        attention_mask = torch.zeros((len(items), length), dtype=torch.long)
        for row, (ids, types, _, _) in enumerate(items):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            token_type_ids[row, : len(types)] = torch.tensor(types)
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
    order = sorted(range(len(split)), key=lambda i: len(split.input_ids[i]))
    return iterate_batches(split, [order[i : i + batch_size] for i in range(0, len(order), batch_size)])
