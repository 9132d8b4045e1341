"""Reading dataset tables as the Hugging Face hub ships them (parquet) or as exported from `datasets` (JSONL).

`read_rows(files)` yields `(source, row)` pairs, `source` saying where the row is ("file:line" for JSONL,
"file:row N" for parquet, 1-based), so that a bad row is reported where it is and skipped, never fatal.
A row that cannot be read (a JSONL line that is not a JSON object, an unreadable parquet file) comes as
`(source, error)` for the caller to count.

Also here: the small vocabulary that the converters of `prepare.py` and `prepare_video.py` share.
pyarrow is needed only for parquet, and imported only when a parquet file is read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..data.jsonl import parse_line

TABLE_SUFFIXES = (".parquet", ".jsonl")


@dataclass(frozen=True)
class Media:
    """One file a row needs: by URL (fetched into the media folder), a video known only by its id, or bytes the
    table holds itself (written into the media folder, named by their sha256)."""

    url: str | None = None
    sha256: str | None = None  # of the file's bytes, when the dataset gives it
    video_id: str | None = None  # found in --video-dir, or through the --video-urls table
    data: bytes | None = None  # an image stored inside the table


class SkipRow(Exception):
    """A well-formed row that is left out on purpose (e.g. the annotator was unsure); counted by reason."""


def table_files(path: str | Path) -> list[Path]:
    """A table file, or every *.parquet / *.jsonl directly in a folder (not below: the hub's other configs
    repeat rows in sibling folders). A folder with no table in it but one folder of train tables below it (a
    dataset repo as `hf download --repo-type dataset ORG/NAME --local-dir DIR` leaves it: DIR/data/train-*.parquet)
    gives those train tables."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in TABLE_SUFFIXES and p.is_file())
        splits = {p.parent for p in path.rglob("*train-*.parquet")} if not files else set()
        if len(splits) == 1:
            files = sorted(p for p in splits.pop().glob("*train-*.parquet") if p.is_file())
    else:
        files = [path] if path.is_file() else []
    if not files:
        raise FileNotFoundError(f"no table at {path}: expected a .parquet or .jsonl file, or a folder of them")
    for f in files:
        if f.suffix not in TABLE_SUFFIXES:
            raise ValueError(f"{f}: not a table, expected .parquet or .jsonl")
    return files


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict | Exception]]:
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = parse_line(line)  # NaN / Infinity / 1e999 and nesting too deep are errors of this row only
                if not isinstance(row, dict):
                    raise ValueError(f"expected a JSON object, got {type(row).__name__}")
            except ValueError as e:  # JSONDecodeError is a ValueError
                yield f"{path}:{number}", e
                continue
            yield f"{path}:{number}", row


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict | Exception]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise RuntimeError(
            f"reading {path} needs pyarrow: `pip install pyarrow`, or export the table as JSONL "
            "(datasets: `ds.to_json('table.jsonl')`)"
        ) from None
    number = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=2048):  # streams: tables can be GBs
            for row in batch.to_pylist():
                number += 1
                yield f"{path}:row {number}", row
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid and ArrowIOError are these
        yield f"{path}:row {number + 1}", ValueError(f"unreadable parquet: {e}")


def read_rows(files: list[Path], limit: int | None = None) -> Iterator[tuple[str, dict | Exception]]:
    """(source, row or error) for every row of the tables, in order; at most `limit` rows."""
    count = 0
    for path in files:
        reader = _parquet_rows if path.suffix == ".parquet" else _jsonl_rows
        for item in reader(path):
            if limit is not None and count >= limit:
                return
            count += 1
            yield item


def text(row: dict, key: str) -> str:
    """A required, non-empty string field."""
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"field {key!r} is missing or empty")
    return value


def xy(points) -> list[tuple[float, float]]:
    """Points as the hub stores them -> [(x, y), ...]: a list of {"x", "y"} structs, or (for a `Sequence` of
    dicts) one struct of lists {"x": [...], "y": [...]}; None means no points."""
    if points is None:
        return []
    if isinstance(points, dict):
        xs, ys = points.get("x") or [], points.get("y") or []
        if len(xs) != len(ys):
            raise ValueError(f"points: {len(xs)} x values but {len(ys)} y values")
        return [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]
    return [(float(p["x"]), float(p["y"])) for p in points]


def percent_to_pixels(points: list[tuple[float, float]], width: int, height: int) -> list[list[float]]:
    """Percent (0-100) of the image -> pixels, clipped to the image (as Molmo does), 2 decimals."""

    def scale(v: float, size: int) -> float:
        return round(min(max(v, 0.0), 100.0) * size / 100.0, 2)

    return [[scale(x, width), scale(y, height)] for x, y in points]
