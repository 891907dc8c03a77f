"""--cache-teacher: the teacher runs once over the training set; the cached targets are the live ones."""

import json

import pytest
import torch

from eqspike.config import RunConfig
from eqspike.data.batches import iterate_batches
from eqspike.distill.prepare import prepare_data
from eqspike.distill.trainer import Distiller
from eqspike.teacher.cache import TeacherCacheError, build_or_open
from eqspike.teacher.targets import teacher_targets
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def train_split(tiny_teacher, toy_files):
    config = RunConfig(teacher=tiny_teacher.path, train_file=str(toy_files[0]), validation_file=str(toy_files[1]),
                       max_seq_length=32, device="cpu")
    return prepare_data(config, log=lambda *_: None).train


@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-5), ("float16", 2e-2)])
def test_cached_targets_are_the_live_targets(tiny_teacher, train_split, tmp_path, dtype, tolerance):
    layers = [2, 4]
    messages = []
    cache = build_or_open(tiny_teacher.model, train_split, layers, tmp_path, dtype=dtype, batch_size=7, log=messages.append)
    assert len(cache) == len(train_split) and "running the teacher once" in messages[-1]
    indices = [5, 90, 17, 3, 64]  # a shuffled batch, padded to its longest example
    batch = next(iterate_batches(train_split, [indices]))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        live = teacher_targets(tiny_teacher.model, inputs, layers)
    cached = cache.targets(indices, batch["input_ids"].shape[1])
    assert torch.allclose(cached["logits"], live["logits"], atol=1e-5)
    mask = batch["attention_mask"].bool()
    pairs = mask[:, None, :, None] & mask[:, None, None, :]
    assert len(cached["hidden"]) == 3 and len(cached["scores"]) == 2
    for got, want in zip(cached["hidden"], live["hidden"]):
        assert got.shape == want.shape and (got[~mask] == 0).all()
        assert (got[mask] - want[mask]).abs().max() <= tolerance * want[mask].abs().max()
    for got, want in zip(cached["scores"], live["scores"]):
        where = pairs.expand_as(want)
        assert got.shape == want.shape
        assert (got[where] - want[where]).abs().max() <= tolerance * want[where].abs().max()
    # The same teacher, data and layers reuse the cache; other layers get their own.
    again = build_or_open(tiny_teacher.model, train_split, layers, tmp_path, dtype=dtype, log=messages.append)
    assert again.folder == cache.folder and "reusing" in messages[-1]
    other = build_or_open(tiny_teacher.model, train_split, [1, 3], tmp_path, dtype=dtype, log=messages.append)
    assert other.folder != cache.folder


def test_a_cache_too_large_is_refused_with_its_size(tiny_teacher, train_split, tmp_path):
    with pytest.raises(TeacherCacheError, match=r"would take 0\.\d+ GiB, over teacher_cache_max_gb=1e-05"):
        build_or_open(tiny_teacher.model, train_split, [2, 4], tmp_path, max_gb=1e-5)
    assert not any(tmp_path.iterdir())  # nothing half-written


@pytest.mark.slow
def test_distill_with_a_float32_teacher_cache_trains_the_same_student(tiny_teacher, toy_files, tmp_path):
    runs = {}
    cache = dict(cache_teacher=True, teacher_cache_dtype="float32", teacher_cache_dir=str(tmp_path / "cache"))
    for name, extra in (("live", {}), ("cached", cache), ("first_step", dict(max_steps=1))):
        run = tmp_path / name
        messages = []
        Distiller(tiny_config(tiny_teacher, toy_files, run, logging_steps=1, **extra), log=messages.append).run()
        runs[name] = run
        if name == "cached":
            assert any("teacher cache: running the teacher once over 96 examples" in m for m in messages)
    # The cached targets equal the live ones up to float rounding (the teacher ran on other batches, so
    # other paddings): the losses agree at every step, and so do the dev evaluations.
    records = [[json.loads(x) for x in (runs[k] / "metrics.jsonl").read_text().splitlines()] for k in ("live", "cached")]
    losses = [[r["loss"] for r in rs if "loss" in r] for rs in records]
    assert len(losses[0]) == len(losses[1]) > 0
    assert max(abs(p - q) for p, q in zip(*losses)) < 1e-4 * max(map(abs, losses[0]))
    assert [r["eval"] for r in records[0] if "eval" in r] == [r["eval"] for r in records[1] if "eval" in r]
    # The weights: rounding noise must stay small against how far training moved them. Left out: the
    # attention key biases, whose exact gradient is 0 (a key bias shifts every score of a query's row
    # by the same amount, and softmax ignores that), so AdamW turns rounding noise there into lr-sized
    # steps of either sign; how large depends on the CPU's kernels (README, "Many GPUs"). Elsewhere a
    # relative rounding error eps in a gradient moves AdamW's step by about eps of its size: measured
    # here 3e-6 of the distance moved after the first step (a fixed bound of 1e-6 on the mean absolute
    # difference failed on another CPU and torch at 2e-5, key biases included); the bound is 1%.
    live, cached, first = (torch.load(runs[k] / "checkpoint" / "student.pt") for k in ("live", "cached", "first_step"))
    names = [k for k in live if not k.endswith("key.bias")]
    assert len(names) < len(live)  # the exclusion names real parameters

    def mean_abs(x: dict, y: dict) -> float:
        return torch.cat([(x[k].float() - y[k].float()).abs().flatten() for k in names]).mean().item()

    difference, moved = mean_abs(live, cached), mean_abs(live, first)
    assert moved > 0 and difference < 1e-2 * moved, (difference, moved)
