"""A run folder's safety: one writer at a time (a lock), ``--overwrite`` that keeps the old run until the new
one finishes, and no stale temporary files from a killed run.

* The lock is ``fcntl.flock`` on ``RUN/.lock``, which holds the writer's pid. The kernel releases it when
  the process ends, however it ends (SIGKILL included), so a stale file never blocks a rerun; a second run
  into the same folder stops at once with an error naming the pid that holds it.
* ``--overwrite`` moves the files of the old run (the run record's ``RUN_ITEMS``) into ``RUN/.overwritten/``;
  they are put back when the new run fails, and deleted only when it has finished. A killed ``--overwrite``
  run leaves them there: the next ``--overwrite`` keeps them as the run to restore, and the next finished run
  deletes them.
* ``atomic_write`` names its temporary files ``.<name>.<random>.tmp<suffixes>``; a kill between the write
  and the rename leaves one behind, which the next run into the folder removes (under the lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from covid_tf.errors import CovidTfError
from covid_tf.runs.record import RUN_ITEMS

LOCK_NAME = ".lock"
ASIDE_NAME = ".overwritten"


def _holder(path: Path) -> str:
    """The pid written in a lock file; the holder writes it just after locking, so wait a moment for it."""
    for _ in range(50):
        with contextlib.suppress(OSError):
            text = path.read_text().strip()
            if text:
                return text
        time.sleep(0.02)
    return "unknown"


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold the lock of ``run_dir`` (created when missing) for the block; refuse when another process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise CovidTfError(f"{run_dir}: another train run (pid {_holder(path)}) is writing this folder; "
                               "wait for it to end or choose another --out") from None
        # The previous holder removes the file as it ends: a lock on a removed file locks nothing.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(handle).st_ino:
                break
        os.close(handle)
    try:
        os.ftruncate(handle, 0)
        os.write(handle, f"{os.getpid()}\n".encode())
        yield
    finally:
        path.unlink(missing_ok=True)  # while still locked, so no one holds a lock on a removed file
        os.close(handle)


def _present(run_dir: Path) -> list[str]:
    return [name for name in RUN_ITEMS if (run_dir / name).exists() or (run_dir / name).is_symlink()]


def _remove_run_items(run_dir: Path) -> None:
    for name in _present(run_dir):
        target = run_dir / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()


def move_aside(run_dir: Path) -> Path | None:
    """For ``--overwrite``: move the old run into ``.overwritten/`` (None when there is nothing to keep)."""
    aside = run_dir / ASIDE_NAME
    if aside.is_dir():  # a killed --overwrite run: the run it replaces is already aside; drop what it wrote
        _remove_run_items(run_dir)
        return aside
    present = _present(run_dir)
    if not present:
        return None
    aside.mkdir()
    for name in present:
        os.replace(run_dir / name, aside / name)
    return aside


def pending_aside(run_dir: Path) -> Path | None:
    """The ``.overwritten/`` folder a killed ``--overwrite`` run left, if any."""
    aside = run_dir / ASIDE_NAME
    return aside if aside.is_dir() else None


def restore_aside(run_dir: Path, aside: Path) -> None:
    """The new run failed: remove what it wrote and put the old run back."""
    _remove_run_items(run_dir)
    for item in aside.iterdir():
        os.replace(item, run_dir / item.name)
    aside.rmdir()


def discard_aside(aside: Path | None) -> None:
    """The new run finished: the old one is not needed any more."""
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def remove_stale_temporaries(run_dir: Path, report: Callable[[str], None]) -> None:
    """Delete the temporary files of ``atomic_write`` that a killed run left (call under the lock)."""
    stale = [path for path in run_dir.rglob(".*.tmp*") if path.is_file() and not path.is_symlink()]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        report(f"removed {len(stale)} temporary file(s) that a killed run left in {run_dir}")
