"""Reading the project's JSONL datasets (docs/DATA_FORMAT.md): one row per image or video, with its annotations.

Rows are not held in memory: `RowIndex` scans the files once and keeps where each usable row starts (a byte
offset, 16 bytes a row), and a row is read and parsed when it is asked for — a 700k-row dataset costs a few
megabytes in every DataLoader worker, not gigabytes of Python objects.

A malformed line (not an object with a non-empty list of annotation objects, a number that is not finite,
nesting too deep to parse) is reported with its file and line number, counted and skipped: one bad
row is never fatal. Media paths in a row are relative to the folder of its JSONL file and must stay inside it:
`Row.media` refuses absolute paths, `..`, symlinks that lead outside the folder and anything that is not a
regular file (a FIFO would hang the reader), with the row's file:line and the reason.

A row can also be cut into several items (`RowIndex(split=...)`): each item is a range of the row's annotations
(Molmo2 cuts a PixMo-Points image into examples of at most 60 points, pixmo_rules.point_chunks).
"""

from __future__ import annotations

import json
import logging
import math
import os
import stat
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class MediaPathError(ValueError):
    """A media path that does not name a regular file inside the dataset's folder."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is not finite")
    return value


def _no_constants(name: str):
    raise ValueError(f"{name} is not a number (not valid JSON)")


def whole_number(value, name: str, low: int, high: int) -> int:
    """A whole number from `low` to `high` (an int, an integral float or a numeric string), else ValueError."""
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        value = int(value)  # Python refuses strings of over 4300 digits (a ValueError)
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return value


def parse_line(line: str):
    """One JSON value with every number finite, else ValueError: NaN / Infinity (not JSON), 1e999 (no float),
    nesting too deep for the parser (a RecursionError otherwise). Each field's range is checked where it is used."""
    try:
        return json.loads(line, parse_float=_finite, parse_constant=_no_constants)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def resolve_media(root: Path, relative: str, source: str = "") -> Path:
    """`root / relative` if it names a regular file inside `root` (symlinks followed), else an error saying why:
    MediaPathError for a path that leaves the folder or is no regular file, FileNotFoundError for a missing one."""
    where = f"{source}: " if source else ""
    path = Path(relative)
    if not relative or "\0" in relative or path.is_absolute() or ".." in path.parts:
        raise MediaPathError(f"{where}media path {relative!r} must be relative and stay inside {root}")
    full = root / path
    real, real_root = full.resolve(), root.resolve()
    if not real.is_relative_to(real_root):
        raise MediaPathError(f"{where}media path {relative!r} leads outside {root} (a symlink to {real})")
    mode = os.stat(real).st_mode  # FileNotFoundError (with the path) when it is missing
    if not stat.S_ISREG(mode):
        raise MediaPathError(f"{where}media path {relative!r} is not a regular file (a folder, FIFO or device)")
    return full


@dataclass
class Row:
    data: dict
    root: Path  # the folder of the JSONL file (media paths are relative to it)
    source: str  # "file:line"

    @property
    def key(self) -> str:
        """ "name.jsonl:line": what stable choices hash, so that they do not depend on where the folder is."""
        return Path(self.source).name

    def media(self, key: str) -> list[Path]:
        value = self.data.get(key)
        paths = [value] if isinstance(value, str) else value or []
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise ValueError(f"{self.source}: {key!r} must be a path or a list of paths, got {value!r}")
        return [resolve_media(self.root, p, self.source) for p in paths]


def parse_row(line: str) -> dict:
    """A JSONL line as a row object with a non-empty list of annotation objects, else ValueError."""
    data = parse_line(line)
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
        raise ValueError("expected an object with an 'annotations' list of objects")
    if not annotations:
        raise ValueError("no annotations")
    return data


Split = Callable[[dict], list[tuple[int, int]]]  # a row -> the [start, end) annotation ranges of its items


class RowIndex:
    """The usable rows of JSONL files that `keep(row)` accepts, by position: `index.row(i)` reads item i's row.

    split: cuts a row into items, each a range of its annotations (`index.part(i)`); by default a row is one item.
    Malformed lines are counted (`malformed`) and logged once, with file:line, while the files are scanned.
    """

    def __init__(
        self, files: list[Path], keep: Callable[[dict], bool] = lambda row: True, split: Split | None = None
    ) -> None:
        self.files = [Path(f) for f in files]
        file_ids, offsets, numbers, parts = [], [], [], []
        self.malformed_by_file: dict[str, int] = {}
        for file_id, file in enumerate(self.files):
            with open(file, "rb") as f:
                offset = 0
                for number, raw in enumerate(f, start=1):
                    start, offset = offset, offset + len(raw)
                    if not raw.strip():
                        continue
                    try:
                        data = parse_row(raw.decode("utf-8"))  # UnicodeDecodeError is a ValueError too
                    except ValueError as e:
                        self.malformed_by_file[str(file)] = self.malformed_by_file.get(str(file), 0) + 1
                        log.warning("skipped malformed line %s:%d: %s", file, number, e)
                        continue
                    if not keep(data):
                        continue
                    for part in split(data) if split else [(0, len(data["annotations"]))]:
                        file_ids.append(file_id), offsets.append(start), numbers.append(number), parts.append(part)
        self.file_ids = np.array(file_ids, dtype=np.int32)
        self.offsets = np.array(offsets, dtype=np.int64)
        self.numbers = np.array(numbers, dtype=np.int32)
        self.parts = np.array(parts, dtype=np.int32).reshape(-1, 2)  # [items, 2]: start, end annotation
        self.malformed = sum(self.malformed_by_file.values())

    def __len__(self) -> int:
        return len(self.offsets)

    def source(self, i: int) -> str:
        """ "file.jsonl:line" of row i."""
        return f"{self.files[self.file_ids[i]]}:{self.numbers[i]}"

    def part(self, i: int) -> tuple[int, int]:
        """The [start, end) range of row annotations that item i holds."""
        return int(self.parts[i, 0]), int(self.parts[i, 1])

    def row(self, i: int) -> Row:
        file = self.files[self.file_ids[i]]
        with open(file, "rb") as f:
            f.seek(int(self.offsets[i]))
            line = f.readline().decode("utf-8")
        return Row(parse_row(line), file.parent, self.source(i))  # ValueError if the file changed since the scan


def read_jsonl(path: str | Path) -> tuple[list[Row], int]:
    """All well-formed rows of one JSONL file (for small files, e.g. a held-out split), and the malformed count."""
    index = RowIndex([Path(path)])
    return [index.row(i) for i in range(len(index))], index.malformed


def jsonl_files(path: str | Path) -> list[Path]:
    path = Path(path)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"no JSONL data at {path}")
    return files


def has_tasks(tasks: tuple[str, ...], video: bool | None = None) -> Callable[[dict], bool]:
    """A `RowIndex` filter: rows with an annotation of `tasks` (and, unless None, with a video or without)."""

    def keep(row: dict) -> bool:
        if video is not None and ("video" in row) != video:
            return False
        return any(a.get("task") in tasks for a in row["annotations"])

    return keep


def annotation_subset(annotations: list[dict], key: str, tasks: tuple[str, ...], limit: int | None) -> list[dict]:
    """The annotations of `tasks`, at most `limit` (None: all): a stable subset (the same key, the same subset)."""
    annotations = [a for a in annotations if a.get("task") in tasks]
    if limit is not None and len(annotations) > limit:
        start = zlib.crc32(key.encode()) % len(annotations)
        annotations = (annotations[start:] + annotations[:start])[:limit]
    return annotations
