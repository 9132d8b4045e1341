"""Video datasets: JSONL rows with a `"video"` (docs/DATA_FORMAT.md) -> chat examples about the video.

    caption    "Describe this video."             -> the caption
    vqa        the question (+ lettered options)  -> the answer
    pointing   "Point to {label}\\n... video."     -> <points coords="0.5 1 911 800;1.0 2 900 400">label</points>
    counting   "How many {label} are there?"      -> point-then-count or the bare count
    tracking   "Track {label} in the video."      -> <tracks coords="0.0 1 259 340;1.0 1 138 427">label</tracks>

Frame sampling and decoding live in video_io.py (`sample_frame_times`, `load_video`, re-exported here).
Points and tracks carry times; they are written at the sampled frame nearest to each time, so the
answer's timestamps are those printed before the frames. Which frames are sampled is known only once the
video is opened, so timed answers are built then (`Example.video_conversations`). A point after the last
frame is reported with the video's path and its annotation skipped.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from .examples import Conversation, Example
from .image_datasets import annotation_subset, answer_text, conversation, read_rows
from .points import COUNT_PROMPT, NO_MATCH, VIDEO_POINT_PROMPT, format_tracks, format_video_points
from .video_io import VideoError, load_video, sample_frame_times

__all__ = ["VideoClip", "VideoDataset", "VideoError", "load_video", "sample_frame_times", "timed_conversations"]
log = logging.getLogger(__name__)

VIDEO_CAPTION_PROMPTS = (
    "Describe this video.",
    "Describe what happens in this video.",
    "Write a caption for this video.",
)
TRACK_PROMPT = "Track {label} in the video."
TIMED_TASKS = ("pointing", "counting", "tracking")


@dataclass
class VideoClip:
    path: Path
    clip: tuple[float, float] | None = None  # (start, end) seconds
    max_fps: float = 2.0
    max_frames: int = 128

    def load(self):
        return load_video(self.path, self.max_fps, self.max_frames, self.clip)


def _snap(t: float, times: list[float], source: str) -> float:
    """The sampled frame time nearest to `t`; a time after the last frame (beyond half a step) is an error."""
    step = times[1] - times[0] if len(times) > 1 else 0.5
    if t > times[-1] + step / 2 or t < times[0] - step / 2:
        raise VideoError(
            f"{source}: point time {t:.2f}s is outside the sampled video ({times[0]:.2f}-{times[-1]:.2f}s)"
        )
    return min(times, key=lambda s: abs(s - t))


def _by_frame(points: list, times: list[float], source: str) -> list[tuple[float, list[tuple[float, float]]]]:
    frames: dict[float, list[tuple[float, float]]] = {}
    for t, x, y in points:
        frames.setdefault(_snap(t, times, source), []).append((x, y))
    return sorted(frames.items())


def timed_conversations(annotations: list[dict], source: str, times: list[float], width: int, height: int):
    """Pointing / counting / tracking annotations -> conversations, once the sampled frame times are known."""
    conversations = []
    for annotation in annotations:
        try:
            task, label = annotation["task"], annotation["label"]
            if task == "tracking":
                frames: dict[float, dict[int, tuple[float, float]]] = {}
                for object_id, track in annotation["tracks"].items():
                    for t, x, y in track:
                        frames.setdefault(_snap(t, times, source), {})[int(object_id)] = (x, y)
                answer = format_tracks(sorted(frames.items()), label, width, height)
                conversations.append(Conversation([(TRACK_PROMPT.format(label=label), answer)], "tracking"))
                continue
            frames_points = _by_frame(annotation.get("points", []), times, source)
            if task == "pointing":
                answer = format_video_points(frames_points, label, width, height) if frames_points else NO_MATCH
                conversations.append(Conversation([(VIDEO_POINT_PROMPT.format(label=label), answer)], "video_pointing"))
            else:
                count = int(annotation.get("count", sum(len(p) for _, p in frames_points)))
                style = annotation.get("style", "point_count")
                if style == "count" or not frames_points:
                    answer = str(count) if style == "count" or count else NO_MATCH
                else:
                    answer = format_video_points(frames_points, label, width, height, style, count=count)
                conversations.append(Conversation([(COUNT_PROMPT.format(label=label), answer)], "video_counting"))
        except (KeyError, ValueError, TypeError) as e:
            log.warning("skipped an annotation of %s: %s", source, e)
    return conversations


class VideoDataset(torch.utils.data.Dataset):
    """Rows with a video and annotations of `tasks`; item i -> an `Example` whose video loads in the worker."""

    tasks: tuple[str, ...] = ("caption", "vqa", "pointing", "counting", "tracking")

    def __init__(
        self,
        path: str | Path,
        tasks: tuple[str, ...] | None = None,
        max_conversations: int = 8,
        max_fps: float = 2.0,
        max_frames: int = 128,
    ) -> None:
        self.tasks = tuple(tasks or self.tasks)
        self.max_conversations, self.max_fps, self.max_frames = max_conversations, max_fps, max_frames
        self.rows, self.malformed_lines = read_rows(path, self.tasks, video=True)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Example:
        row = self.rows[i]
        annotations = annotation_subset(row, self.tasks, self.max_conversations)
        static = []
        for k, annotation in enumerate(a for a in annotations if a.get("task") not in TIMED_TASKS):
            try:
                if annotation["task"] == "caption":
                    prompt = VIDEO_CAPTION_PROMPTS[
                        zlib.crc32(f"{row.source}:{k}".encode()) % len(VIDEO_CAPTION_PROMPTS)
                    ]
                    static.append(Conversation([(prompt, answer_text(annotation["caption"]))], "video_caption"))
                else:
                    static.append(conversation(annotation, row, k))
            except (KeyError, ValueError, TypeError, IndexError) as e:
                log.warning("skipped a malformed annotation in %s: %r", row.source, e)
        timed = [a for a in annotations if a.get("task") in TIMED_TASKS]
        clip = None
        if "clip_start" in row.data or "clip_end" in row.data:
            clip = (float(row.data.get("clip_start", 0.0)), float(row.data.get("clip_end", float("inf"))))
        return Example(
            conversations=static,
            video=VideoClip(row.media("video")[0], clip, self.max_fps, self.max_frames),
            video_conversations=partial(timed_conversations, timed, row.source) if timed else None,
            source=row.source,
        )
