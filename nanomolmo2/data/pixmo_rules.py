"""Molmo2's rules for its PixMo datasets that cut or extend a row's annotations (olmo/data/pixmo_datasets.py in
allenai/molmo2): PixMo-Points in examples of at most 60 points (`PixMoPoints`), and a caption with one of its
transcripts (`PixMoCap.get`, mode "transcript_and_caption"). datasets.JsonlDataset applies them when a mixture entry
asks for them (`max_points`, `transcripts`)."""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np


def num_points(annotation: dict) -> int:
    points = annotation.get("points")
    return len(points) if isinstance(points, list) else 0  # a malformed list is reported when the item is built


def point_chunks(max_points: int) -> Callable[[dict], list[tuple[int, int]]]:
    """A `RowIndex` split: a row's annotations in chunks of at most `max_points` points, in order; an annotation with
    more is left out (`PixMoPoints` in olmo/data/pixmo_datasets.py). Each chunk is an annotation range; the items
    drop the over-long annotations inside it again (`JsonlDataset.example`)."""

    def split(row: dict) -> list[tuple[int, int]]:
        chunks: list[tuple[int, int]] = []
        start, end, total = None, 0, 0
        for k, annotation in enumerate(row["annotations"]):
            n = num_points(annotation)
            if n > max_points:
                continue
            if start is not None and total + n > max_points:  # this one would overflow: close the chunk
                chunks.append((start, end))
                start, total = None, 0
            start = k if start is None else start
            end, total = k + 1, total + n
        return chunks + ([(start, end)] if start is not None else [])

    return split


def with_transcript(annotations: list[dict], key: str, rng: np.random.Generator | None) -> list[dict]:
    """After each caption with `transcripts`, one of them as a transcript annotation (`PixMoCap.get`, mode
    "transcript_and_caption"): drawn by `rng`, else a stable pick."""
    out = []
    for annotation in annotations:
        out.append(annotation)
        transcripts = annotation.get("transcripts") if annotation.get("task") == "caption" else None
        if isinstance(transcripts, list) and transcripts:
            k = int(rng.integers(len(transcripts))) if rng is not None else zlib.crc32(key.encode()) % len(transcripts)
            out.append({"task": "transcript", "transcript": transcripts[k]})
    return out
