"""kill -9 at every kind of point of a run, then --resume: the run finishes with the weights and scores
of a run that was never interrupted, and nothing a crash left behind stays in the run directory."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

# A stand-in for `python -m eqspike`, which SIGKILLs itself at a chosen point: the n-th call of a
# function whose first argument (or destination) matches a pattern.
KILLER = textwrap.dedent("""
    import os, signal, sys
    import torch
    function, pattern, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    calls = 0

    def killing(real, argument):
        def wrapper(*args, **kwargs):
            global calls
            if pattern in str(args[argument]):
                calls += 1
                if calls == n:
                    os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        return wrapper

    if function == "replace":      # os.replace(src, dst): a rename of a finished write
        os.replace = killing(os.replace, 1)
    elif function == "save":       # torch.save(obj, path): inside a checkpoint write
        torch.save = killing(torch.save, 1)
    elif function == "step":       # the optimiser's step: in the middle of training
        import eqspike.distill.trainer as d
        d.Distiller.step = killing(d.Distiller.step, 0)
        pattern = "Distiller"
    from eqspike.app.cli import main
    sys.exit(main(sys.argv[4:]))
""")


@pytest.fixture(scope="module")
def reference(tiny_teacher, toy_files, tmp_path_factory):
    folder = tmp_path_factory.mktemp("crash")
    (folder / "killer.py").write_text(KILLER)
    run = folder / "reference"
    assert _distill(folder, tiny_teacher, toy_files, run).returncode == 0
    return folder, run


def _distill(folder, tiny_teacher, toy_files, run, *kill: str, resume: bool = False) -> subprocess.CompletedProcess:
    args = (
        ["distill", "--resume", "--output-dir", str(run)]
        if resume
        else [
            "distill",
            "--teacher",
            tiny_teacher.path,
            "--train-file",
            str(toy_files[0]),
            "--validation-file",
            str(toy_files[1]),
            "--output-dir",
            str(run),
            "--max-seq-length",
            "32",
            "--student-layers",
            "2",
            "--batch-size",
            "16",
            "--intermediate-epochs",
            "1",
            "--prediction-epochs",
            "1",
            "--evals-per-epoch",
            "2",
            "--save-steps",
            "2",
            "--time-steps",
            "4",
            "--calibration-examples",
            "16",
            "--device",
            "cpu",
        ]
    )
    command = [sys.executable, str(folder / "killer.py"), *kill, *args] if kill else [sys.executable, "-m", "eqspike", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize(
    "where, kill",
    [
        ("mid-training, after 5 steps", ("step", "Distiller", "5")),
        ("inside the 2nd checkpoint write (student.pt written, optimizer.pt not)", ("save", "optimizer.pt", "2")),
        ("between the two renames of the 3rd checkpoint", ("replace", "/checkpoint", "3")),
        ("before the rename of the first best student", ("replace", "/student", "1")),
        ("while writing metrics.json", ("replace", "metrics.json", "1")),
    ],
)
def test_a_run_killed_anywhere_resumes_to_the_same_result(reference, tiny_teacher, toy_files, where, kill):
    folder, expected = reference
    run = folder / f"killed-{kill[0]}-{kill[2]}-{kill[1].strip('/').replace('.', '_')}"
    killed = _distill(folder, tiny_teacher, toy_files, run, *kill)
    assert killed.returncode == -9, (where, killed.stdout[-2000:], killed.stderr[-2000:])
    assert not (run / "metrics.json").exists()
    resumed = _distill(folder, tiny_teacher, toy_files, run, resume=True)
    assert resumed.returncode == 0, (where, resumed.stdout[-2000:], resumed.stderr[-2000:])
    a, b = torch.load(expected / "checkpoint" / "student.pt"), torch.load(run / "checkpoint" / "student.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), where
    mine, theirs = (json.loads((r / "metrics.json").read_text()) for r in (run, expected))
    assert mine["student_score"] == theirs["student_score"] and mine["student_energy_ratio"] == theirs["student_energy_ratio"]
    leftovers = [p.name for p in run.iterdir() if p.name.startswith(".") and p.name != ".eqspike-run"]  # not the marker
    assert leftovers == [], (where, leftovers)
