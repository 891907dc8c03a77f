"""--cache-teacher: the teacher runs once over the training set; the cached targets are the live ones."""

import json

import pytest
import torch

from eqspike.data.batches import iterate_batches
from eqspike.distill.config import RunConfig
from eqspike.distill.prepare import prepare_data
from eqspike.distill.trainer import Distiller
from eqspike.teacher.cache import TeacherCacheError, build_or_open
from eqspike.teacher.targets import teacher_targets
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def train_split(tiny_teacher, toy_files):
    config = RunConfig(
        teacher=tiny_teacher.path,
        train_file=str(toy_files[0]),
        validation_file=str(toy_files[1]),
        max_seq_length=32,
        device="cpu",
        selection="dev",
    )
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


def test_a_cache_too_large_with_the_layers_can_keep_the_logits_alone(tiny_teacher, train_split, tmp_path):
    """1e-6 GiB (1,074 bytes) holds the 86 x 2 float32 logits (688 bytes), not the layers' targets."""
    messages = []
    cache = build_or_open(
        tiny_teacher.model, train_split, [2, 4], tmp_path, max_gb=1e-6, log=messages.append, logits_if_too_large=True
    )
    assert not cache.with_layers and len(cache) == len(train_split)
    assert "only the logits are cached; the intermediate stage runs the teacher live" in messages[0]
    assert set(cache.targets([0, 1], 32)) == {"logits"}
    with pytest.raises(TeacherCacheError, match="over teacher_cache_max_gb=1e-07"):
        build_or_open(tiny_teacher.model, train_split, [2, 4], tmp_path / "none", max_gb=1e-7, logits_if_too_large=True)


@pytest.mark.slow
@pytest.mark.parametrize("stage, changes", [("intermediate", {}), ("prediction", dict(intermediate_epochs=0))])
def test_a_step_on_float32_cached_targets_has_the_live_losses(tiny_teacher, toy_files, tmp_path, stage, changes):
    """The first training step of each stage, from the same student (the same seed, calibration and
    batch), has the same losses with the teacher run live and read from a float32 cache: the cached
    targets are the live ones up to float rounding (the teacher ran on other batches, so other
    paddings). Later steps are not compared: AdamW turns that rounding into trajectories that drift
    apart by amounts that depend on the CPU's kernels, and no bound on them holds on every machine."""
    cache = dict(cache_teacher=True, teacher_cache_dtype="float32", teacher_cache_dir=str(tmp_path / "cache"))
    first = {}
    # the layers' targets do not fit: stage 1 runs the teacher live
    logits_only = dict(cache, teacher_cache_max_gb=1e-6, teacher_cache_dir=str(tmp_path / "logits-cache"))
    for name, extra in (("live", {}), ("cached", cache), ("logits", logits_only)):
        messages = []
        run = tmp_path / name
        config = tiny_config(tiny_teacher, toy_files, run, logging_steps=1, max_steps=1, **changes, **extra)
        assert Distiller(config, log=messages.append).run()["status"] == "interrupted"
        if name != "live":
            assert any("teacher cache: running the teacher once over" in m for m in messages)
        assert any("only the logits are cached" in m for m in messages) == (name == "logits" and stage == "intermediate")
        records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        first[name] = next(r for r in records if "loss" in r)
        assert first[name]["stage"] == stage
    losses = [k for k in first["live"] if k not in ("step", "stage", "lr", "elapsed_s")]
    assert "loss" in losses and len(losses) > 1  # the total and its parts
    for key in losses:
        assert abs(first["live"][key] - first["cached"][key]) <= 1e-5 * abs(first["live"][key]) + 1e-7, key
        assert abs(first["live"][key] - first["logits"][key]) <= 1e-5 * abs(first["live"][key]) + 1e-7, key
