"""Files written so that a crash never leaves half of one: atomic directories and files, the repair of
what a crash between two renames leaves, and a full disk reported as such.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from eqspike.errors import EqspikeError


@contextmanager
def atomic_directory(target: str | Path):
    """Yield a staging directory beside ``target`` (``.NAME.*``); on success it replaces
    ``target`` by two renames (``target`` -> ``.NAME.old``, staging -> ``target``), so a crash never
    leaves a half-written directory where a good one was. ``recover_directory`` repairs what a crash
    between the renames leaves. A full disk is reported as such, and the staging copy is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if _disk_full(error, target.parent):
            raise DiskFullError(
                f"no space left on the device holding {target.parent} while writing {target.name}; "
                f"{'the previous ' + target.name + ' is intact' if target.exists() else 'nothing was replaced'}"
                f" (free some space and continue with --resume)"
            ) from None
        raise


class DiskFullError(EqspikeError):
    """A write ran out of disk space (the message says what is intact)."""


def _disk_full(error: BaseException, folder: Path) -> bool:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    # torch.save reports a full disk from its zip writer ("unexpected pos"), not as ENOSPC
    return isinstance(error, RuntimeError) and shutil.disk_usage(folder).free < 64 * 2**20


def recover_directory(target: str | Path, complete_marker: str | None = None) -> list[str]:
    """Repair what a crash inside ``atomic_directory`` (or ``write_atomic``) can leave beside ``target``:
    when ``target`` is missing, a finished staging copy (it holds ``complete_marker``, written last)
    or else ``.NAME.old`` becomes ``target``; unfinished staging copies, temporary files and a leftover
    ``.NAME.old`` are removed. Returns what was done, for the log."""
    target = Path(target)
    done: list[str] = []
    if not target.parent.is_dir():
        return done
    old = target.with_name(f".{target.name}.old")
    staged = sorted((p for p in target.parent.glob(f".{target.name}.*") if p != old), key=lambda p: p.stat().st_mtime)
    if not target.exists() and complete_marker is not None:
        finished = [p for p in staged if (p / complete_marker).is_file()]
        if finished:
            os.replace(finished[-1], target)
            staged.remove(finished[-1])
            done.append(f"restored {target.name} from a finished copy a crash left behind")
        elif old.is_dir() and (old / complete_marker).is_file():
            os.replace(old, target)
            done.append(f"restored {target.name} from its previous version ({old.name})")
    for leftover in staged + ([old] if old.exists() else []):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        done.append(f"removed {leftover.name}, left by an interrupted write")
    return done


def write_atomic(path: str | Path, text: str) -> None:
    """Write a text file so that a crash leaves either the old file or the new one, never half of one."""
    path = Path(path)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def check_output_file(path: str | Path, flag: str, inputs: tuple[str | Path | None, ...] = ()) -> Path:
    """Refuse, before any work, an output file that cannot be written: a directory, one of the command's
    ``inputs``, or one whose folder is missing or read-only."""
    path = Path(path)
    if path.is_dir():
        raise EqspikeError(f"{flag} {path} is a directory; give a file name")
    for source in inputs:
        if source is not None and path.exists() and Path(source).exists() and path.resolve() == Path(source).resolve():
            raise EqspikeError(f"{flag} {path} is also this command's input; write the output to another file")
    _check_writable_parent(path, flag)
    return path


def check_output_dir(path: str | Path, flag: str) -> Path:
    """Refuse, before any work, an output folder that cannot be written: a file, or under a read-only folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise EqspikeError(f"{flag} {path} is a file; give a folder")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise EqspikeError(f"{flag} {path} is not writable")
        return path
    _check_writable_parent(path, flag)
    return path


def _check_writable_parent(path: Path, flag: str) -> None:
    """The nearest existing folder above ``path`` must be a writable folder (missing ones are created)."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise EqspikeError(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise EqspikeError(f"{flag} {path}: {parent} is not writable")
