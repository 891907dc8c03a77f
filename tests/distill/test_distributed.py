"""torchrun with 2 CPU processes (gloo) trains the student one process trains (up to float noise)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from eqspike.distill.trainer import Distiller
from eqspike.runtime.distributed import Sharding, from_environment, shard
from tests.conftest import QUIET, tiny_config


def test_shards_interleave_and_cover_the_global_batch():
    batch = [7, 3, 9, 1, 4]
    parts = [shard(batch, Sharding(rank, 2)) for rank in range(2)]
    assert parts == [[([7, 9, 4], True)], [([3, 1], True)]]
    # One process with two micro-batches takes the parts two processes take, in rank order.
    assert shard(batch, Sharding(0, 1), micro_batches=2) == [([7, 9, 4], True), ([3, 1], True)]
    # Two processes with two micro-batches each: part j = batch[j::4] goes to rank j mod 2.
    assert shard(batch, Sharding(0, 2), micro_batches=2) == [([7, 4], True), ([9], True)]
    assert shard(batch, Sharding(1, 2), micro_batches=2) == [([3], True), ([1], True)]
    # A batch smaller than the number of parts: an empty part gets a stand-in with weight 0.
    assert shard([5], Sharding(1, 2)) == [([5], False)]
    assert shard([5], Sharding(0, 1)) == [([5], True)]
    assert shard([5, 6], Sharding(0, 1), micro_batches=3) == [([5], True), ([6], True), ([5], False)]


def test_environment_describes_the_process(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert from_environment() == Sharding(2, 4, 0)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK=4 and WORLD_SIZE=4"):
        from_environment()


def test_more_processes_than_gpus_are_refused_by_name(monkeypatch):
    """torchrun --nproc_per_node 2 on a one-GPU machine: rank 1 is refused before it asks for cuda:1."""
    from eqspike.errors import EqspikeError
    from eqspike.runtime.distributed import initialise

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(EqspikeError, match=r"LOCAL_RANK=1 has no GPU: this machine has 1"):
        initialise("cuda")


@pytest.mark.slow
def test_torchrun_two_processes_interrupted_and_resumed_match_one_process(tiny_teacher, toy_files, tmp_path):
    """Two processes train, bit for bit, the student of one process that cuts each batch into the same two
    parts (``--micro-batches 2``), also when they are interrupted and resumed.

    Why exact equality and not a tolerance: each rank computes its interleaved part of the batch (the
    same tensors, padded to the same length, on one thread each) and DDP adds the two parts' gradients;
    one process with two micro-batches computes the same parts and adds their gradients in the same
    order (``shard``), and every loss divides by the global batch's counts (``Share``). Scaling a loss
    by the number of replicas and DDP's division by it are exact in floating point. Against a plain
    one-process run (one part per batch) no weight bound can be stated: the padding and the summation
    order differ, and AdamW divides every gradient by its own running RMS, so rounding noise in a
    coordinate whose true gradient is ~0 (the attention key bias: softmax ignores a shift shared by
    all keys) becomes a step of full size, lr. The weights then differ by up to ~lr * steps, which
    CPUs with other kernels do reach (3e-4 seen). What can be bounded is the loss of the first
    step, computed from the same weights: float32 rounding of a few thousand terms, far below 1e-5.
    """
    changes = dict(batch_size=5, intermediate_epochs=1, prediction_epochs=1, save_steps=1000, logging_steps=1)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())

    def eqspike(config, *extra: str, processes: int = 1) -> str:
        args = ["distill"]
        for key, value in config.to_dict().items():
            if value is not None and value is not False:
                args += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
        launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] if processes > 1 else []
        done = subprocess.run(
            [sys.executable, *launcher, "-m", "eqspike", *args, *extra], env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    # One process, each batch of 5 in two parts (3 + 2); the last batch of each epoch has 1 example,
    # so its second part is a stand-in with weight 0, as rank 1's shard is below.
    one = tmp_path / "one"
    eqspike(tiny_config(tiny_teacher, toy_files, one, micro_batches=2, **changes))
    # Two processes, stopped after 25 of the 36 steps (86 training examples: 10 of the 96 are held out for selection) (in the prediction stage) and resumed, again on two.
    two = tmp_path / "two"
    first = eqspike(tiny_config(tiny_teacher, toy_files, two, max_steps=25, **changes), processes=2)
    assert first.count("distributed: 2 processes (gloo)") == 1  # rank 0 alone logs
    assert "stopped after 25 steps" in first and not (two / "metrics.json").exists()
    resumed = eqspike(
        tiny_config(tiny_teacher, toy_files, two, resume=True, **changes), "--max-steps", "none", processes=2
    )  # beyond the saved limit
    assert "resume: prediction stage at step 7/18" in resumed

    a, b = torch.load(one / "checkpoint" / "student.pt"), torch.load(two / "checkpoint" / "student.pt")
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"weights differ in {different[:5]}: {max((a[k] - b[k]).abs().max().item() for k in different)}"
    m1, m2 = (json.loads((run / "metrics.json").read_text()) for run in (one, two))
    assert m1["student_score"] == m2["student_score"] and m1["teacher_score"] == m2["teacher_score"]
    lines = lambda run: [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    losses = {run: [x["loss"] for x in lines(run) if "loss" in x] for run in (one, two)}
    assert len(losses[one]) == len(losses[two]) == 36
    assert max(abs(p - q) for p, q in zip(losses[one], losses[two])) <= 1e-6 * max(map(abs, losses[one]))

    # A plain one-process run: its first loss is the global batch's mean, as the two ranks' is.
    plain = tmp_path / "plain"
    Distiller(tiny_config(tiny_teacher, toy_files, plain, max_steps=1, **changes), **QUIET).run()
    first_plain = [x["loss"] for x in lines(plain) if "loss" in x][0]
    assert abs(first_plain - losses[two][0]) <= 1e-5 * abs(first_plain)


def test_commands_that_are_not_distributed_refuse_to_run_under_torchrun(monkeypatch, capsys):
    from eqspike.app.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["selfcheck"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "eqspike selfcheck: error: this command runs in one process; under torchrun only distill is distributed (WORLD_SIZE=2)"
    )


def test_evaluation_batches_are_shared_out_and_gathered(monkeypatch, tiny_teacher, toy_files):
    """Each rank predicts every N-th batch; the gathered logits are every example's, in order."""
    from eqspike.data.evaluation import predict
    from eqspike.distill.config import RunConfig
    from eqspike.distill.prepare import prepare_data

    split = prepare_data(
        RunConfig(
            teacher=tiny_teacher.path,
            train_file=str(toy_files[0]),
            validation_file=str(toy_files[1]),
            max_seq_length=32,
            selection="dev",
        ),
        log=lambda *_: None,
    ).train
    model = tiny_teacher.model
    full = predict(lambda b: model(**b).logits, split, 10, torch.device("cpu"))

    def run_rank(rank: int, other_shares: list):
        sizes, captured = [], {}

        def gather(self, local):  # stands in for all_gather_object
            captured["share"] = local
            return [local, *other_shares]

        monkeypatch.setattr(Sharding, "gather", gather)
        logits = predict(
            lambda b: (sizes.append(len(b["input_ids"])), model(**b).logits)[1],
            split,
            10,
            torch.device("cpu"),
            sharding=Sharding(rank, 2),
        )
        return sizes, captured["share"], logits

    sizes1, share1, _ = run_rank(1, [])
    sizes0, _, combined = run_rank(0, [share1])
    assert len(sizes0) == len(sizes1) == 5 and sum(sizes0) + sum(sizes1) == len(split) == 96
    assert combined.shape == full.shape and abs(combined - full).max() < 1e-5
