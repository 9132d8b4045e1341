"""Datasets: rows of the project's JSONL format (jsonl.py) -> chat examples, with Molmo2's prompts and answers.

Images (a row with "image" / "images", or none for text-only rows):

    caption    "Describe this image." (one of a few phrasings)       -> the caption
    pointing   "Point to {label}\\nPlease say 'There are none.' ..."  -> <points coords="1 1 500 250">label</points>
    counting   "How many {label} are there?"                          -> point-then-count, count-then-point, or "3"
    vqa        the question (+ lettered options)                       -> the answer
    chat       the user turns                                          -> the assistant turns

Videos (a row with "video"):

    caption    "Describe this video."             -> the caption
    vqa        the question (+ lettered options)  -> the answer
    pointing   "Point to {label}\\n... video."     -> <points coords="0.5 1 911 800;1.0 2 900 400">label</points>
    counting   "How many {label} are there?"      -> point-then-count or the bare count
    tracking   "Track {label} in the video."      -> <tracks coords="0.0 1 259 340;1.0 1 138 427">label</tracks>

Points and tracks in videos carry times; they are written at the sampled frame nearest to each time, so the
answer's timestamps are those printed before the frames. Which frames are sampled is known only once the
video is opened, so timed answers are built then (`Example.video_conversations`). A point after the last
frame is reported with the video's path and its annotation skipped; so is any annotation that cannot be used
(a missing field, a wrong type, an empty answer, a count or image size out of range).
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from .examples import Conversation, Example
from .image_preprocessing import load_image
from .jsonl import Row, RowIndex, annotation_subset, has_tasks, jsonl_files, whole_number
from .points import (
    COUNT_PROMPT,
    NO_MATCH,
    POINT_PROMPT,
    VIDEO_POINT_PROMPT,
    format_points,
    format_tracks,
    format_video_points,
)
from .video_io import VideoError, decode_video

log = logging.getLogger(__name__)

CAPTION_PROMPTS = (
    "Describe this image.",
    "Describe this image in detail.",
    "Write a caption for this image.",
    "What is in this image? Describe every object.",
)
VIDEO_CAPTION_PROMPTS = (
    "Describe this video.",
    "Describe what happens in this video.",
    "Write a caption for this video.",
)
TRACK_PROMPT = "Track {label} in the video."
TIMED_TASKS = ("pointing", "counting", "tracking")
MAX_IMAGES = 5  # Molmo2's limit per example
MAX_SIDE = 1 << 17  # pixels: the largest width or height a row may state
MAX_COUNT = 1 << 20  # the largest count an annotation may state
# What a malformed annotation raises (ArithmeticError: a number that overflows where no check foresaw it).
MALFORMED = (KeyError, ValueError, TypeError, IndexError, ArithmeticError)

# ---------------------------------------------------------------------------------------------------------------------
# images


def _choice(options: tuple[str, ...], key: str) -> str:
    """A stable pseudo-random pick (the same row always gets the same phrasing; crc32 is stable across runs)."""
    return options[zlib.crc32(key.encode()) % len(options)]


def image_size(row: Row) -> tuple[int, int]:
    """(width, height) of the row's first image, EXIF-corrected; from the row when it says, else the file."""
    if "width" in row.data and "height" in row.data:
        return tuple(whole_number(row.data[k], k, 1, MAX_SIDE) for k in ("width", "height"))
    return load_image(row.media("image")[0]).size


def answer_text(value) -> str:
    """An answer as text: a non-empty string (or a number); anything else makes the annotation malformed."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"the answer must be a non-empty text, got {value!r}")
    return value


def conversation(annotation: dict, row: Row, index: int) -> Conversation:
    """One annotation -> one conversation (raises KeyError/ValueError on a malformed annotation)."""
    task = annotation["task"]
    if task == "caption":
        prompt = _choice(CAPTION_PROMPTS, f"{row.key}:{index}")
        return Conversation([(prompt, answer_text(annotation["caption"]))], style="caption")
    if task == "pointing":
        label, points = annotation["label"], [tuple(p[:2]) for p in annotation["points"]]
        answer = format_points(points, label, *image_size(row)) if points else NO_MATCH
        return Conversation([(POINT_PROMPT.format(label=label), answer)], style="pointing")
    if task == "counting":
        label, points = annotation["label"], [tuple(p[:2]) for p in annotation.get("points", [])]
        count = whole_number(annotation.get("count", len(points)), "count", 0, MAX_COUNT)
        style = annotation.get("style", "point_count")
        if style == "count":
            answer = str(count)
        elif points:
            answer = format_points(points, label, *image_size(row), style=style)
        else:  # nothing to point at: "There are none." for zero, else just the number
            answer = NO_MATCH if count == 0 else str(count)
        return Conversation([(COUNT_PROMPT.format(label=label), answer)], style=style)
    if task == "vqa":
        question = annotation["question"]
        if annotation.get("options"):
            letters = "ABCDEFGHIJ"
            question += "\n" + "\n".join(f"{letters[i]}. {o}" for i, o in enumerate(annotation["options"]))
        return Conversation([(question, answer_text(annotation["answer"]))], style="vqa")
    if task == "chat":
        messages = annotation["messages"]
        turns = [
            (messages[i]["content"], answer_text(messages[i + 1]["content"])) for i in range(0, len(messages) - 1, 2)
        ]
        if not turns or any(messages[i]["role"] != ("user", "assistant")[i % 2] for i in range(2 * len(turns))):
            raise ValueError("chat messages must alternate user/assistant, starting with the user")
        return Conversation(turns, style="chat")
    raise ValueError(f"unknown task {task!r}")


class JsonlDataset(torch.utils.data.Dataset):
    """Rows of JSONL files (one file, or every *.jsonl of a folder) with annotations of `tasks`; item i -> an
    `Example`: an image example for a row with images (or none), a video example for a row with a "video".

    max_conversations: at most this many annotations per example (a stable subset), to bound its length.
    max_fps, max_frames, frame_size: how a video is sampled and decoded (frame_size: each frame straight to
    this square, the processor's crop size, which bounds a worker's memory).
    Rows stay on disk (jsonl.RowIndex): each item is read when it is asked for.
    """

    tasks: tuple[str, ...] = ("caption", "pointing", "counting", "vqa", "chat", "tracking")
    video_rows: bool | None = None  # None: image and video rows; False: image rows only; True: video rows only

    def __init__(
        self,
        path: str | Path,
        tasks: tuple[str, ...] | None = None,
        max_conversations: int = 8,
        max_fps: float = 2.0,
        max_frames: int = 128,
        frame_size: int | None = None,
    ) -> None:
        self.tasks = tuple(tasks or self.tasks)
        self.max_conversations, self.max_fps, self.max_frames = max_conversations, max_fps, max_frames
        self.frame_size = frame_size
        self.index = RowIndex(jsonl_files(path), has_tasks(self.tasks, self.video_rows))
        self.malformed_lines = self.index.malformed
        self.malformed_by_file = self.index.malformed_by_file  # several datasets may read one file

    def __len__(self) -> int:
        return len(self.index)

    def source(self, i: int) -> str:
        """Where item i comes from: "file.jsonl:line"."""
        return self.index.source(i)

    def __getitem__(self, i: int) -> Example:
        row = self.index.row(i)
        return self.video_example(row) if "video" in row.data else self.image_example(row)

    def image_example(self, row: Row) -> Example:
        annotations = annotation_subset(row, self.tasks, self.max_conversations)
        conversations = []
        for k, annotation in enumerate(annotations):
            try:
                conversations.append(conversation(annotation, row, k))
            except MALFORMED as e:
                log.warning("skipped a malformed annotation in %s: %r", row.source, e)
        images = row.media("images") or row.media("image")
        if len(images) > MAX_IMAGES:
            raise ValueError(f"{row.source}: {len(images)} images, at most {MAX_IMAGES} per example")
        return Example(conversations=conversations, images=images, source=row.source)

    def video_example(self, row: Row) -> Example:
        annotations = annotation_subset(row, self.tasks, self.max_conversations)
        static = []
        for k, annotation in enumerate(a for a in annotations if a.get("task") not in TIMED_TASKS):
            try:
                if annotation["task"] == "caption":
                    prompt = _choice(VIDEO_CAPTION_PROMPTS, f"{row.key}:{k}")
                    static.append(Conversation([(prompt, answer_text(annotation["caption"]))], "video_caption"))
                else:
                    static.append(conversation(annotation, row, k))
            except MALFORMED as e:
                log.warning("skipped a malformed annotation in %s: %r", row.source, e)
        timed = [a for a in annotations if a.get("task") in TIMED_TASKS]
        clip = None
        if "clip_start" in row.data or "clip_end" in row.data:
            clip = (float(row.data.get("clip_start", 0.0)), float(row.data.get("clip_end", float("inf"))))
        return Example(
            conversations=static,
            video=VideoClip(row.media("video")[0], clip, self.max_fps, self.max_frames, self.frame_size),
            video_conversations=partial(timed_conversations, timed, row.source) if timed else None,
            source=row.source,
        )


# One task each, image rows only: a row with a video belongs to VideoDataset (its answers are about the video).
class CaptioningDataset(JsonlDataset):
    video_rows = False
    tasks = ("caption",)


class PointingDataset(JsonlDataset):
    video_rows = False
    tasks = ("pointing", "counting")


class VQADataset(JsonlDataset):
    video_rows = False
    tasks = ("vqa",)


class TextDataset(JsonlDataset):
    video_rows = False
    tasks = ("chat",)


# ---------------------------------------------------------------------------------------------------------------------
# videos


@dataclass
class VideoClip:
    path: Path
    clip: tuple[float, float] | None = None  # (start, end) seconds
    max_fps: float = 2.0
    max_frames: int = 128
    frame_size: int | None = None  # resize each frame to this square as it is decoded (the processor's crop size)

    def load(self) -> tuple[np.ndarray, list[float], tuple[int, int]]:
        """(frames, times, (width, height) of the video's own frames)."""
        return decode_video(self.path, self.max_fps, self.max_frames, self.clip, frame_size=self.frame_size)


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
                count = whole_number(
                    annotation.get("count", sum(len(p) for _, p in frames_points)), "count", 0, MAX_COUNT
                )
                style = annotation.get("style", "point_count")
                if style == "count" or not frames_points:
                    answer = str(count) if style == "count" or count else NO_MATCH
                else:
                    answer = format_video_points(frames_points, label, width, height, style, count=count)
                conversations.append(Conversation([(COUNT_PROMPT.format(label=label), answer)], "video_counting"))
        except MALFORMED as e:
            log.warning("skipped an annotation of %s: %s", source, e)
    return conversations


class VideoDataset(JsonlDataset):
    """Rows with a video and annotations of `tasks`; item i -> an `Example` whose video loads in the worker."""

    tasks = ("caption", "vqa", "pointing", "counting", "tracking")
    video_rows = True
