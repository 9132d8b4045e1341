"""The run folder (`out_dir`): one run at a time, a fresh run never on top of an earlier one, and a log that
matches the checkpoint a run resumed from.

- **A lock.** `run.lock` in the folder is held (flock) for as long as the run lives, so a second run on the same
  folder fails at once, naming the process that holds it; the kernel lets go when the holder dies, however it
  dies. (Two runs in one folder would delete each other's temporary checkpoints and rotate each other's away.)
  The lock belongs to a process: several Trainers of one process (tests) share it.
- **No fresh run in a used folder.** A run that does not resume refuses a folder that holds checkpoints, metrics
  or a final model of an earlier run, unless `overwrite`, which deletes them first. (Before, a new run saved
  `step_100` beside the old run's `step_1000`, rotation deleted the new one at once, and a resume took the old
  run's checkpoint.)
- **A log without repeats.** A resumed run cuts `metrics.jsonl` back to the step it resumed from: the steps
  between that checkpoint and a crash would otherwise be logged twice.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from pathlib import Path

from ..formats.atomic import fsync_dir, write_text_atomically
from .distributed import DistributedEnv, broadcast_object

log = logging.getLogger(__name__)
LOCK = "run.lock"
EARLIER_RUN = ("checkpoints", "metrics.jsonl", "final")  # what makes a folder "used"
ALSO_OVERWRITTEN = ("tensorboard", "config.json")


class RunFolderError(RuntimeError):
    """The run folder is in use by another run, or holds an earlier run that this one would destroy."""


_held: dict[Path, list] = {}  # folder -> [descriptor holding its lock, RunFolders of this process using it]


class RunFolder:
    """A run's hold on its folder: `RunFolder.open(...)`, then `close()` (or the process ends) to let go."""

    def __init__(self, path: Path) -> None:
        self.path, self._open = path, True

    @classmethod
    def open(cls, path: str | Path, resuming: bool, overwrite: bool = False) -> RunFolder:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        key = path.resolve()
        if key not in _held:
            _held[key] = [_lock(path), 0]
        _held[key][1] += 1
        folder = cls(key)
        try:
            if not resuming:
                _start_fresh(path, overwrite)
        except BaseException:
            folder.close()
            raise
        return folder

    def close(self) -> None:
        if self._open:
            self._open = False
            entry = _held[self.path]
            entry[1] -= 1
            if entry[1] == 0:
                os.close(entry[0])  # the flock goes with the descriptor
                del _held[self.path]

    def __del__(self) -> None:
        self.close()


def hold_run_folder(path: Path, resuming: bool, overwrite: bool, env: DistributedEnv) -> RunFolder | None:
    """Rank 0 holds the folder (RunFolder.open); every rank raises the same RunFolderError if it cannot."""
    folder, error = None, None
    if env.is_main:
        try:
            folder = RunFolder.open(path, resuming=resuming, overwrite=overwrite)
        except RunFolderError as e:
            error = str(e)
    error = broadcast_object(error)
    if error:
        raise RunFolderError(error)
    return folder


def _lock(path: Path) -> int:
    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunFolderError(
            f"{path} is in use by another run (process {holder}): wait for it to end, or use another --out-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _start_fresh(path: Path, overwrite: bool) -> None:
    used = [name for name in EARLIER_RUN if (path / name).exists()]
    if not used:
        return
    if not overwrite:
        raise RunFolderError(
            f"{path} holds an earlier run ({', '.join(used)}): resume it with --resume-from {path}, choose another "
            "--out-dir, or start over with --overwrite (which deletes them)"
        )
    log.warning("overwrite: deleting the earlier run in %s (%s)", path, ", ".join(used))
    for name in EARLIER_RUN + ALSO_OVERWRITTEN:
        target = path / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
    fsync_dir(path)


def truncate_metrics(path: str | Path, step: int) -> int:
    """Keep the lines of `metrics.jsonl` of steps up to `step` (and drop a line a crash left half written);
    returns the number of lines dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            keep = json.loads(line)["step"] <= step
        except (ValueError, KeyError, TypeError):
            keep = False
        if keep:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        write_text_atomically(path, "".join(f"{line}\n" for line in kept))
        log.info("metrics.jsonl cut back to step %d (%d later lines dropped)", step, dropped)
    return dropped
