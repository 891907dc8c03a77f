"""Teacher outputs computed once per data set (``--cache-teacher``) and read back at every step.

Distillation asks the teacher for the same targets of the same examples every epoch. The cache runs
the teacher once over the training split and stores, per example and without padding:

    logits.npy                      (N, C)                         float32
    hidden_{j}.npy, j = 0..K        (total tokens, H)              hidden states of the distilled layers
    scores_{j}.npy, j = 1..K        (sum_i heads * L_i^2,)         pre-softmax attention scores
    token_offsets.npy / score_offsets.npy                          where example i starts

as memory-mapped .npy files in a folder named by a fingerprint of the teacher's weights, the token
ids, the layer map and the storage dtype, so a different teacher or data set never reads a stale
cache. ``float16`` storage (the default) halves the disk and differs from the live targets by
float16 rounding (relative 5e-4); ``float32`` reproduces them up to float noise. Hidden states and
scores are only stored when the intermediate stage needs them.

Size: tokens * H * (K + 1) + heads * sum_i L_i^2 * K values. For GLUE-sized data sets with attention
scores this is large (a 6-block BERT-base student at 40 tokens per example: 0.66 MB per example in
float16, about 260 GB for MNLI; benchmarks/bench_cache_size.py). Over ``max_gb`` the cache is refused
with its size, or, with ``logits_if_too_large`` (the trainer's choice), only the logits are cached and
the layers' targets come from the teacher run live.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from eqspike.data.batches import EncodedSplit, sequential_batches
from eqspike.errors import EqspikeError
from eqspike.runtime.files import atomic_directory
from eqspike.runtime.progress import progress
from eqspike.teacher.targets import teacher_targets

CACHE_DTYPES = ("float16", "float32")  # --teacher-cache-dtype

_FLOAT16_MAX = float(np.finfo(np.float16).max)


FORMAT_VERSION = 1


class TeacherCacheError(EqspikeError):
    """The teacher cache cannot be built as asked (too large, or unusable)."""


def fingerprint(teacher: nn.Module, split: EncodedSplit, layers: Sequence[int], dtype: str, with_layers: bool) -> str:
    """A digest of everything the cached values depend on: weights, token ids, layers, dtype."""
    digest = hashlib.sha256()
    digest.update(
        json.dumps({"version": FORMAT_VERSION, "layers": list(layers), "dtype": dtype, "with_layers": with_layers}).encode()
    )
    for name, tensor in sorted(teacher.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    split.update_digest(digest, labels=False)
    return digest.hexdigest()[:20]


def estimated_bytes(
    lengths: np.ndarray, hidden_size: int, heads: int, num_labels: int, layers: Sequence[int], dtype: str, with_layers: bool
) -> int:
    """Bytes of the cache for examples of ``lengths`` tokens."""
    values = 0
    if with_layers:
        values = int(lengths.sum()) * hidden_size * (len(layers) + 1) + heads * int((lengths**2).sum()) * len(layers)
    return values * np.dtype(dtype).itemsize + len(lengths) * num_labels * 4


class TeacherCache:
    """Read-only view of a built cache: ``targets(indices, length)`` is ``teacher_targets`` of a batch."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.with_layers = self.meta["with_layers"]
        self.heads = self.meta["heads"]
        load = lambda name: np.load(self.folder / f"{name}.npy", mmap_mode="r")  # noqa: E731
        self.logits = load("logits")
        self.lengths = load("lengths")
        if self.with_layers:
            self.token_offsets, self.score_offsets = load("token_offsets"), load("score_offsets")
            self.hidden = [load(f"hidden_{j}") for j in range(len(self.meta["layers"]) + 1)]
            self.scores = [load(f"scores_{j + 1}") for j in range(len(self.meta["layers"]))]

    def __len__(self) -> int:
        return len(self.lengths)

    def targets(self, indices: Sequence[int], length: int, device: torch.device | str = "cpu") -> dict[str, Any]:
        """Logits, hidden states (zero past each example's end) and scores of examples ``indices``,
        padded to ``length`` tokens, in float32 on ``device``."""
        indices = [int(i) for i in indices]
        out: dict[str, Any] = {"logits": torch.from_numpy(np.ascontiguousarray(self.logits[indices])).to(device)}
        if not self.with_layers:
            return out
        batch, heads = len(indices), self.heads
        hidden = [torch.zeros(batch, length, h.shape[1]) for h in self.hidden]
        scores = [torch.zeros(batch, heads, length, length) for _ in self.scores]
        for row, i in enumerate(indices):
            n = int(self.lengths[i])
            if n > length:
                raise TeacherCacheError(f"example {i} has {n} tokens but the batch was padded to {length}")
            start, end = int(self.token_offsets[i]), int(self.token_offsets[i + 1])
            for j, values in enumerate(self.hidden):
                hidden[j][row, :n] = torch.from_numpy(values[start:end].astype(np.float32))
            start = int(self.score_offsets[i])
            for j, values in enumerate(self.scores):
                block = values[start : start + heads * n * n].astype(np.float32).reshape(heads, n, n)
                scores[j][row, :, :n, :n] = torch.from_numpy(block)
        out["hidden"] = [h.to(device) for h in hidden]
        out["scores"] = [s.to(device) for s in scores]
        return out


def build_or_open(
    teacher: nn.Module,
    split: EncodedSplit,
    layers: Sequence[int],
    root: str | Path,
    *,
    with_layers: bool = True,
    dtype: str = "float16",
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    max_gb: float = 20.0,
    log=print,
    logits_if_too_large: bool = False,
) -> TeacherCache:
    """The cache of ``teacher`` on ``split`` under ``root`` (built on the first call, then reused).
    Larger than ``max_gb`` with the layers' targets: refused, or with ``logits_if_too_large`` the
    logits alone are cached (``with_layers`` of the cache returned says which)."""
    if dtype not in CACHE_DTYPES:
        raise TeacherCacheError(
            f"teacher_cache_dtype={dtype!r} is not valid; choose one of: {', '.join(map(repr, CACHE_DTYPES))}"
        )
    config = teacher.config
    heads, hidden_size = config.num_attention_heads, config.hidden_size
    lengths = split.input_ids.lengths().astype(np.int64)
    size = estimated_bytes(lengths, hidden_size, heads, config.num_labels, layers, dtype, with_layers)
    if with_layers and size > max_gb * 2**30 and logits_if_too_large:
        log(
            f"teacher cache: the layers' targets of {len(split)} examples would take {size / 2**30:.1f} GiB, over "
            f"teacher_cache_max_gb={max_gb:g}: only the logits are cached; the intermediate stage runs the teacher live"
        )
        with_layers = False
        size = estimated_bytes(lengths, hidden_size, heads, config.num_labels, layers, dtype, with_layers)
    folder = Path(root) / fingerprint(teacher, split, layers, dtype, with_layers)
    if (folder / "meta.json").is_file():
        log(f"teacher cache: reusing {folder}")
        return TeacherCache(folder)
    if size > max_gb * 2**30:
        smaller = ", use teacher_cache_dtype float16" if dtype != "float16" else ""
        raise TeacherCacheError(
            f"the teacher cache for {len(split)} examples would take {size / 2**30:.1f} GiB, over teacher_cache_max_gb="
            f"{max_gb:g}; raise teacher_cache_max_gb{smaller}, or leave cache_teacher off"
        )
    log(f"teacher cache: running the teacher once over {len(split)} examples ({size / 2**20:.1f} MiB) into {folder}")
    offsets = np.concatenate([[0], np.cumsum(lengths)]), np.concatenate([[0], np.cumsum(heads * lengths**2)])
    with atomic_directory(folder) as staging:
        _write_arrays(teacher, split, layers, staging, lengths, offsets, with_layers, dtype, batch_size, device)
        meta = {
            "version": FORMAT_VERSION,
            "examples": len(split),
            "layers": list(layers),
            "dtype": dtype,
            "with_layers": with_layers,
            "heads": heads,
            "hidden_size": hidden_size,
            "bytes": size,
        }
        (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return TeacherCache(folder)


def _write_arrays(
    teacher: nn.Module,
    split: EncodedSplit,
    layers: Sequence[int],
    staging: Path,
    lengths: np.ndarray,
    offsets: tuple[np.ndarray, np.ndarray],
    with_layers: bool,
    dtype: str,
    batch_size: int,
    device: torch.device | str,
) -> None:
    """Write the cache's .npy files into ``staging``: the lengths, the logits (N, C) and, ``with_layers``,
    the token and score offsets, the hidden states of the K + 1 distilled layers and the K layers'
    attention scores, filled by running the teacher once over ``split``."""
    config = teacher.config
    token_offsets, score_offsets = offsets
    create = lambda name, shape, kind: np.lib.format.open_memmap(staging / f"{name}.npy", mode="w+", dtype=kind, shape=shape)  # noqa: E731
    logits = create("logits", (len(split), config.num_labels), np.float32)
    np.save(staging / "lengths.npy", lengths)
    hidden: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    if with_layers:
        np.save(staging / "token_offsets.npy", token_offsets)
        np.save(staging / "score_offsets.npy", score_offsets)
        hidden = [create(f"hidden_{j}", (int(token_offsets[-1]), config.hidden_size), dtype) for j in range(len(layers) + 1)]
        scores = [create(f"scores_{j + 1}", (int(score_offsets[-1]),), dtype) for j in range(len(layers))]
    batches = sequential_batches(split, batch_size)
    with torch.no_grad():
        for batch in progress(batches, total=-(-len(split) // batch_size), desc="teacher cache"):
            index = batch["index"].tolist()
            inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")}
            targets = teacher_targets(teacher, inputs, list(layers))
            logits[index] = targets["logits"].float().cpu().numpy()
            if not with_layers:
                continue
            hidden_values = [_storable(h, dtype) for h in targets["hidden"]]
            score_values = [_storable(s, dtype) for s in targets["scores"]]
            for row, i in enumerate(index):
                n = int(lengths[i])
                for j, values in enumerate(hidden_values):
                    hidden[j][token_offsets[i] : token_offsets[i + 1]] = values[row, :n]
                for j, values in enumerate(score_values):
                    scores[j][score_offsets[i] : score_offsets[i + 1]] = values[row, :, :n, :n].reshape(-1)
    for array in [logits, *(hidden + scores if with_layers else [])]:
        array.flush()
    del logits, hidden, scores


def _storable(values: Tensor, dtype: str) -> np.ndarray:
    values = values.float()
    if dtype == "float16":
        values = values.clamp(-_FLOAT16_MAX, _FLOAT16_MAX)
    return values.cpu().numpy().astype(dtype)
