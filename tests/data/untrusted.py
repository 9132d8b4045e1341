"""Untrusted inputs the data tests share: rows with bad numbers or deep nesting, media paths that leave the folder,
a FIFO, a decompression-bomb PNG, a video larger than the frame limit."""

import json
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

CAPTION = [{"task": "caption", "caption": "A red circle."}]


def png_bomb(path: Path, side: int = 10_000) -> Path:
    """A real grayscale PNG of side x side black pixels (100 M for 10,000): about 100 KB on disk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, row = zlib.compressobj(9), bytes(side + 1)  # each row: filter byte 0, then its pixels
    parts = [compressor.compress(row) for _ in range(side)] + [compressor.flush()]
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")
    )
    return path


def write_video(path: Path, width: int, height: int, frames: int = 2, fps: float = 2.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((height, width, 3), 40 * i, np.uint8))
    writer.release()
    return path


def deep(depth: int = 100_000) -> str:
    """A JSON line nested deeper than the parser can go (RecursionError in json.loads)."""
    return '{"annotations": ' + "[" * depth + "]" * depth + "}"


def escaping_rows(folder: Path, outside: Path) -> list[tuple[dict | str, str]]:
    """(row, the reason it is refused) for media paths that leave `folder` or name no regular file; makes the
    files they point to (`outside` is a folder beside `folder`, holding a private image)."""
    outside.mkdir(parents=True, exist_ok=True)
    secret = outside / "private.png"
    secret.write_bytes((folder / "images" / "000000.png").read_bytes())
    (folder / "bad").mkdir(exist_ok=True)
    (folder / "bad" / "link.png").symlink_to(secret)
    os.mkfifo(folder / "bad" / "fifo.png")
    relative = os.path.relpath(secret, folder)
    return [
        ({"image": relative, "annotations": CAPTION}, "must be relative and stay inside"),
        ({"image": str(secret), "annotations": CAPTION}, "must be relative and stay inside"),
        ({"image": "bad/link.png", "annotations": CAPTION}, "leads outside"),
        ({"image": "bad/fifo.png", "annotations": CAPTION}, "not a regular file"),
        ({"video": "../videos/x.mp4", "annotations": CAPTION}, "must be relative and stay inside"),
        ({"image": "images", "annotations": CAPTION}, "not a regular file"),
    ]


def lines(rows: list) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
