"""allenai/Molmo2-VideoPoint -> the project's video rows (docs/DATA_FORMAT.md), and where its videos come from.

The table has no video URLs: a row names its video by `video_id` (+ `video_source`). A video is found
  - in `--video-dir` folders (searched recursively; a file `<video_id>.<ext>` or `<video_id>_2fps.mp4`, the
    names the dataset's helpers and its `generated_videos/` folder use), else
  - through `--video-urls`, a JSON object video_id -> URL, or video_id -> {"gcp_url": URL, ...} as in the
    dataset's `youtube_id_to_urls_mapping.json`; such videos are fetched like images (https, size limit).

Rows are grouped as Molmo2 groups them (`Molmo2VideoPoint.load`, olmo/data/molmo2_datasets.py): a video of at
most 63 s is used whole, one output row with every query on it; a longer one is cut into the table's
precomputed clips (`clip_start`, `clip_end`, at most 63 s; a long video without one, or a query with points
outside its clip, is left out). Points are percent of the frame per 2 fps timestamp; they become `[t, x, y]` in
pixels of the decoded video, `t` in seconds from the video start (the dataset's `clip_times` rule makes them
clip-relative when read). Each query becomes a `counting` annotation with the table's question (the
`video_point_styles` rule asks and answers it as Molmo2 does); rows the annotator marked unsure are left out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..data.video_io import read_frames
from .tables import Media, SkipRow, percent_to_pixels, text, xy

VIDEO_SUFFIXES = {".mp4", ".webm", ".mkv", ".mov", ".avi"}
MAX_CLIP_SECONDS = 63.0  # Molmo2's VideoPoint clips (`max_seconds` with `use_clips_from_metadata`)


@dataclass
class VideoSources:
    dirs: list[Path] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)
    _index: dict[str, Path] | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_args(cls, dirs: list[str] | None, urls_file: str | None) -> VideoSources:
        urls = {}
        if urls_file:
            table = json.loads(Path(urls_file).read_text(encoding="utf-8"))
            if not isinstance(table, dict):
                raise ValueError(f"{urls_file}: expected a JSON object video_id -> URL")
            for video_id, value in table.items():
                url = value if isinstance(value, str) else (value or {}).get("url") or (value or {}).get("gcp_url")
                if isinstance(url, str):
                    urls[str(video_id)] = url
        return cls([Path(d) for d in dirs or []], urls)

    def find(self, video_id: str) -> Path | None:
        if self._index is None:  # one walk over the folders, not one per row
            self._index = {}
            for folder in self.dirs:
                for path in sorted(folder.rglob("*")):
                    if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file():
                        stem = path.stem
                        if stem.endswith("_2fps"):
                            self._index.setdefault(stem[: -len("_2fps")], path)
                        else:
                            self._index[stem] = path  # the original wins over the 2 fps copy
        return self._index.get(video_id)


def video_size(path: Path) -> tuple[int, int]:
    """(width, height) of the frames as the loader decodes them (after any rotation the container asks for)."""
    frame = read_frames(path, [0])[0]
    return frame.shape[1], frame.shape[0]


def videopoint_media(row: dict) -> list[Media]:
    return [Media(video_id=text(row, "video_id"))]


def videopoint_fields(row: dict) -> dict:
    """The clip of the row (part of what groups rows: one output row per video clip, module docstring); none for a
    video of at most MAX_CLIP_SECONDS, which is used whole."""
    clip = {k: float(row[k]) for k in ("clip_start", "clip_end") if row.get(k) is not None}
    if len(clip) == 2 and clip["clip_end"] <= clip["clip_start"]:
        raise ValueError(f"empty clip {clip['clip_start']}-{clip['clip_end']} s")
    if row.get("video_duration") is None:
        return clip  # length unknown: the clip as the table gives it
    if float(row["video_duration"]) <= MAX_CLIP_SECONDS:
        return {}
    if len(clip) != 2:
        raise SkipRow("long video without a clip")
    if clip["clip_end"] - clip["clip_start"] > MAX_CLIP_SECONDS:
        raise SkipRow(f"clip longer than {MAX_CLIP_SECONDS:g} s")
    return clip


def videopoint(row: dict, sizes: list[tuple[int, int]]) -> list[dict]:
    if row.get("annotator_unsure"):
        raise SkipRow("annotator unsure")
    width, height = sizes[0]
    times, frames = row.get("two_fps_timestamps") or [], row.get("points") or []
    if len(times) != len(frames):
        raise ValueError(f"{len(times)} timestamps but {len(frames)} frames of points")
    clip = videopoint_fields(row)
    if clip and any(not clip["clip_start"] <= float(t) <= clip["clip_end"] for t in times):
        raise SkipRow("points outside the clip")
    points = []
    for t, frame in zip(times, frames, strict=True):
        if float(t) < 0:
            raise ValueError(f"negative timestamp {t}")
        points += [[float(t), x, y] for x, y in percent_to_pixels(xy(frame), width, height)]
    count = row.get("count")
    question = row.get("question")
    annotation = {
        "task": "counting",
        "label": text(row, "label"),
        "points": points,
        "count": int(count) if count is not None else len(points),
    }
    return [annotation | ({"question": question} if isinstance(question, str) and question.strip() else {})]
