"""Reading the project's JSONL datasets (docs/DATA_FORMAT.md): one row per image or video, with its annotations.

A malformed line (not an object with a non-empty list of annotation objects) is reported with its file and
line number, counted and skipped. Media paths in a row are relative to the folder of its JSONL file.
"""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class Row:
    data: dict
    root: Path  # the folder of the JSONL file (media paths are relative to it)
    source: str  # "file:line"

    def media(self, key: str) -> list[Path]:
        value = self.data.get(key)
        paths = [value] if isinstance(value, str) else value or []
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise ValueError(f"{self.source}: {key!r} must be a path or a list of paths, got {value!r}")
        return [self.root / p for p in paths]


def read_jsonl(path: str | Path) -> tuple[list[Row], int]:
    """All well-formed rows of a JSONL file, and the number of malformed lines (each one logged)."""
    path = Path(path)
    rows, bad = [], 0
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            source = f"{path}:{number}"
            try:
                data = json.loads(line)
                annotations = data.get("annotations") if isinstance(data, dict) else None
                if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
                    raise ValueError("expected an object with an 'annotations' list of objects")
                if not annotations:
                    raise ValueError("no annotations")
            except ValueError as e:  # JSONDecodeError is a ValueError
                bad += 1
                log.warning("skipped malformed line %s: %s", source, e)
                continue
            rows.append(Row(data, path.parent, source))
    return rows, bad


def jsonl_files(path: str | Path) -> list[Path]:
    path = Path(path)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"no JSONL data at {path}")
    return files


def read_rows(path: str | Path, tasks: tuple[str, ...], video: bool) -> tuple[list[Row], int]:
    """The rows of every JSONL file at `path` with annotations of `tasks` (rows with a video, or without),
    and the number of malformed lines."""
    rows, malformed = [], 0
    for file in jsonl_files(path):
        file_rows, bad = read_jsonl(file)
        malformed += bad
        rows += [
            r
            for r in file_rows
            if ("video" in r.data) == video and any(a.get("task") in tasks for a in r.data.get("annotations", []))
        ]
    return rows, malformed


def annotation_subset(row: Row, tasks: tuple[str, ...], limit: int) -> list[dict]:
    """The row's annotations of `tasks`, at most `limit`: a stable subset (the same row, the same subset)."""
    annotations = [a for a in row.data["annotations"] if a.get("task") in tasks]
    if len(annotations) > limit:
        start = zlib.crc32(row.source.encode()) % len(annotations)
        annotations = (annotations[start:] + annotations[:start])[:limit]
    return annotations
