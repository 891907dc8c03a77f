"""The environment a number was measured in: package versions, the code's commit, the device.

``environment_record`` goes into every run's ``metrics.json`` and model card, so that a score can be
traced to the lock file, commit and machine it came from (README, "Reproducing the numbers").
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

# The packages whose version can change a trained student's numbers.
PACKAGES = ("eqspike", "torch", "transformers", "datasets", "tokenizers", "torchdeq", "numpy", "safetensors")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (None when it is not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(folder: str | Path | None = None) -> dict[str, Any] | None:
    """The commit of the checkout holding ``folder`` (default: this package) and whether its tracked
    files differ from it; None when the package is not run from a git checkout."""
    folder = Path(folder) if folder is not None else Path(__file__).resolve().parents[2]
    if not (folder / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


@functools.cache
def loaded_code_commit() -> dict[str, Any] | None:
    """``git_commit()`` of this package, taken once per process: the modules a process imported do not
    change when a later commit lands, so every run of one process (``--seeds``, compare, benchmarks)
    records the commit of its first run."""
    return git_commit()


def device_name(device: torch.device) -> str:
    """The accelerator's name, or the CPU's model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_record(device: torch.device | str = "cpu", precision: str = "fp32") -> dict[str, Any]:
    """Everything a run's numbers depend on besides its config and seed: versions, commit, device,
    threads and precision."""
    device = torch.device(device)
    return {
        "python": platform.python_version(),
        "packages": package_versions(),
        "git": loaded_code_commit(),
        "platform": f"{platform.system()} {platform.machine()}",
        "device": device.type,
        "device_name": device_name(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "precision": precision,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }
