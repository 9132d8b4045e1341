"""Durable, atomic writes: a file or folder appears whole under its name or not at all, even after a power loss.

Every writer of the package that puts something in place goes through here: checkpoints, `final/` and other
model folders, prepared datasets and their reports, downloaded media.

- The bytes go to a hidden temporary sibling (the same folder, so that the rename is atomic).
- The temporary's files and folders are fsynced before the rename, and the parent folder after it. Without the
  first, a power loss can leave the new name holding truncated files (while older copies were already deleted);
  without the second, the rename itself can be lost.
- A writer holds an flock on its temporary while it works. `sweep_stale` removes the leftovers of a killed writer
  (the kernel drops a dead process's locks) and never one that a live writer still holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

PART = ".part"  # suffix of a temporary file being written (hidden name: ".<target name>.<random>.part")


def fsync_file(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Make the entries of a folder (new names, renames, deletions) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str | Path) -> None:
    """fsync a file, or every file and folder under a folder (the folder itself last)."""
    path = Path(path)
    if not path.is_dir():
        fsync_file(path)
        return
    for root, _, files in os.walk(path, topdown=False):
        for name in files:
            fsync_file(Path(root) / name)
        fsync_dir(root)


def hold(path: str | Path) -> int:
    """An open descriptor of `path` (a file or folder) with an exclusive flock; close it to let go."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def durable_rename(src: str | Path, dst: str | Path) -> None:
    """Rename a complete file or folder `src` to `dst` (no folder there): its contents first, then the rename."""
    fsync_tree(src)
    os.rename(src, dst)
    fsync_dir(Path(dst).parent)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Write `path` whole or not at all: yields a file object of a temporary beside it, which replaces `path`
    (fsynced, then renamed, then the folder fsynced) when the block ends without an error, and is deleted if not."""
    path = Path(path)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PART)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # ours until closed: sweep_stale leaves it alone
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            os.chmod(temp, 0o644)  # mkstemp makes it private; these are ordinary data files
            os.replace(temp, path)  # still holding the lock: no sweep can take the file in between
    finally:
        if os.path.lexists(temp):
            os.unlink(temp)
    fsync_dir(path.parent)


def write_text_atomically(path: str | Path, text: str) -> None:
    with atomic_file(path, "w", encoding="utf-8") as f:
        f.write(text)


def sweep_stale(folder: str | Path, pattern: str) -> list[Path]:
    """Delete the entries of `folder` matching `pattern` that no live writer holds (leftovers of a killed one)."""
    removed = []
    for path in sorted(Path(folder).glob(pattern)):
        if path.is_symlink():  # never ours: remove the link itself, never what it points to
            path.unlink(missing_ok=True)
            removed.append(path)
            continue
        try:
            fd = hold(path)
        except BlockingIOError:
            continue  # a writer is at work on it
        except OSError:
            continue  # gone already, or not ours to open
        try:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
        finally:
            os.close(fd)
    return removed
