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

Molmo2's per-dataset rules, switched on per dataset by a mixture entry (data_root.py), from
`olmo/data/pixmo_datasets.py`, `olmo/data/molmo2_datasets.py` and `olmo/preprocessing/multicrop_preprocessor.py` in
allenai/molmo2:

    max_conversations None  every annotation of the image in one example, in a new random order at each draw
                            (the token budget drops the last ones, examples.py); a number keeps a stable subset
    max_points 60           an image's point annotations cut into examples of at most 60 points (PixMo-Points)
    both_point_styles       each pointing/counting example twice: once as `point_count`, once as `pointing`
    transcripts             a caption brings one random transcript of the image as a second annotation
    p_high_res 0.3          a single-image example is cut into up to 24 crops with this probability
    clip_times              video times from the clip start, points on the 2 fps grid (video_point_rules.py)
    video_point_styles      a video's pointing / counting queries as Molmo2-VideoPoint asks and answers them:
                            `video_point_count` or `video_point` per query, 20 % as one multi-turn conversation

The random choices come from the generator `JsonlDataset.example(i, rng)` is given (the training stream seeds one
per stream position, so they differ between epochs and repeat on a resumed run); `dataset[i]` makes stable ones.

Points and tracks in videos carry times; they are written at the sampled frame nearest to each time, so the
answer's timestamps are those printed before the frames. Which frames are sampled is known only once the
video is opened, so timed answers are built then (`Example.video_conversations`). A point after the last
frame is reported with the video's path and its annotation skipped; so is any annotation that cannot be used
(a missing field, a wrong type, an empty answer, a count or image size out of range).
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from .examples import Conversation, Example
from .image_preprocessing import load_image
from .jsonl import Row, RowIndex, annotation_subset, has_tasks, jsonl_files, whole_number
from .pixmo_rules import num_points, point_chunks, with_transcript
from .points import (
    COUNT_PROMPT,
    NO_MATCH,
    POINT_PROMPT,
    VIDEO_POINT_PROMPT,
    format_points,
    format_tracks,
    format_video_points,
)
from .video_io import decode_video
from .video_point_rules import by_frame, draw_styles, frame_time, video_point_conversations

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
# Molmo2's transcript prompts (GENERAL_PROMPTS_V1["transcript"], olmo/preprocessing/data_formatter.py)
TRANSCRIPT_PROMPTS = (
    "Describe this image as if you are a person speaking",
    "Imagine you are a person talking about this image. Generate a transcript of what you would say.",
    "Generate an audio transcript of a person describing this image",
    "Create a transcript of a human describing this image out load",
    "Describe this in this style of a human talking",
)
TRACK_PROMPT = "Track {label} in the video."
POINT_STYLE_CYCLE = ("point_count", "pointing")  # item 2k is the point_count example, 2k+1 the pointing one
HIGH_RES_MAX_CROPS = 24  # Molmo2's `high_res_max_crops`
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


def conversation(annotation: dict, row: Row, index: int, point_style: str | None = None) -> Conversation:
    """One annotation -> one conversation (raises KeyError/ValueError on a malformed annotation).

    point_style: "pointing" or "point_count" for every pointing / counting annotation (both_point_styles)."""
    task = annotation["task"]
    if task == "caption":
        prompt = _choice(CAPTION_PROMPTS, f"{row.key}:{index}")
        return Conversation([(prompt, answer_text(annotation["caption"]))], style="caption")
    if task == "transcript":  # made from a caption's transcripts (JsonlDataset, transcripts=True)
        prompt = _choice(TRANSCRIPT_PROMPTS, f"{row.key}:{index}")
        return Conversation([(prompt, answer_text(annotation["transcript"]))], style="transcript")
    if point_style is not None and task in ("pointing", "counting"):
        label, points = annotation["label"], [tuple(p[:2]) for p in annotation["points"]]
        prompt = (POINT_PROMPT if point_style == "pointing" else COUNT_PROMPT).format(label=label)
        answer = format_points(points, label, *image_size(row), style=point_style) if points else NO_MATCH
        return Conversation([(prompt, answer)], style=point_style)
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

    max_conversations, max_points, both_point_styles, transcripts, p_high_res: Molmo2's per-dataset rules (module
    docstring). max_fps, max_frames, frame_size: how a video is sampled and decoded (frame_size: each frame straight
    to this square, the processor's crop size, which bounds a worker's memory).
    Rows stay on disk (jsonl.RowIndex): each item is read when it is asked for.
    """

    tasks: tuple[str, ...] = ("caption", "pointing", "counting", "vqa", "chat", "tracking")
    video_rows: bool | None = None  # None: image and video rows; False: image rows only; True: video rows only

    def __init__(
        self,
        path: str | Path,
        tasks: tuple[str, ...] | None = None,
        max_conversations: int | None = None,
        max_fps: float = 2.0,
        max_frames: int = 128,
        frame_size: int | None = None,
        max_points: int | None = None,
        both_point_styles: bool = False,
        transcripts: bool = False,
        p_high_res: float = 0.0,
        clip_times: bool = False,
        video_point_styles: bool = False,
    ) -> None:
        self.tasks = tuple(tasks or self.tasks)
        self.max_conversations, self.max_fps, self.max_frames = max_conversations, max_fps, max_frames
        self.frame_size, self.max_points, self.transcripts, self.p_high_res = (
            frame_size,
            max_points,
            transcripts,
            p_high_res,
        )
        self.clip_times, self.video_point_styles = clip_times, video_point_styles
        self.styles = POINT_STYLE_CYCLE if both_point_styles else (None,)
        split = point_chunks(max_points) if max_points is not None else None
        self.index = RowIndex(jsonl_files(path), has_tasks(self.tasks, self.video_rows), split)
        self.malformed_lines = self.index.malformed
        self.malformed_by_file = self.index.malformed_by_file  # several datasets may read one file

    def __len__(self) -> int:
        return len(self.index) * len(self.styles)

    def source(self, i: int) -> str:
        """Where item i comes from: "file.jsonl:line"."""
        return self.index.source(i // len(self.styles))

    def __getitem__(self, i: int) -> Example:
        return self.example(i)

    def example(
        self, i: int, rng: np.random.Generator | None = None, rewrite: Callable[[dict], dict] | None = None
    ) -> Example:
        """Item i; `rng` makes the random choices (annotation order, transcript, crops), else they are stable.
        rewrite: applied to the row before it is read (shapesworld/text_world.py puts a scene on its grid)."""
        part, point_style = divmod(i, len(self.styles))[0], self.styles[i % len(self.styles)]
        row = self.index.row(part)
        if rewrite is not None:
            row = dataclasses.replace(row, data=rewrite(row.data))
        start, end = self.index.part(part)
        annotations = row.data["annotations"][start:end]
        if self.max_points is not None:
            annotations = [a for a in annotations if num_points(a) <= self.max_points]
        annotations = annotation_subset(annotations, row.key, self.tasks, self.max_conversations)
        if self.transcripts:
            annotations = with_transcript(annotations, row.key, rng)
        if rng is not None and self.max_conversations is None:
            rng.shuffle(annotations)  # Molmo2 shuffles an example's annotations (ExamplePreprocessor)
        if "video" in row.data:
            return self.video_example(row, annotations, rng)
        example = self.image_example(row, annotations, point_style)
        if rng is not None and len(example.images) == 1 and self.p_high_res and rng.random() < self.p_high_res:
            example.max_crops = HIGH_RES_MAX_CROPS
        return example

    def image_example(self, row: Row, annotations: list[dict], point_style: str | None = None) -> Example:
        conversations = []
        for k, annotation in enumerate(annotations):
            try:
                conversations.append(conversation(annotation, row, k, point_style))
            except MALFORMED as e:
                log.warning("skipped a malformed annotation in %s: %r", row.source, e)
        images = row.media("images") or row.media("image")
        if len(images) > MAX_IMAGES:
            raise ValueError(f"{row.source}: {len(images)} images, at most {MAX_IMAGES} per example")
        return Example(conversations=conversations, images=images, source=row.source)

    def video_example(self, row: Row, annotations: list[dict], rng: np.random.Generator | None = None) -> Example:
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
        clip_start = (clip[0] if clip else 0.0) if self.clip_times else None
        builders = []
        if self.video_point_styles:  # pointing / counting queries drawn now: the draws need no frame times
            queries = [a for a in timed if a.get("task") in ("pointing", "counting")]
            timed = [a for a in timed if a.get("task") not in ("pointing", "counting")]
            if queries:
                picks, multi_turn = draw_styles(len(queries), row.key, rng)
                builders.append(partial(video_point_conversations, queries, picks, multi_turn, row.source, clip_start))
        if timed:
            builders.append(partial(timed_conversations, timed, row.source, clip_start=clip_start))
        video = VideoClip(row.media("video")[0], clip, self.max_fps, self.max_frames, self.frame_size, self.clip_times)
        return Example(
            conversations=static,
            video=video,
            video_conversations=partial(_joined, builders) if builders else None,
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
    clip_relative: bool = False  # times from the clip start (Molmo2's loader) rather than from the video start

    def load(self) -> tuple[np.ndarray, list[float], tuple[int, int]]:
        """(frames, times, (width, height) of the video's own frames)."""
        return decode_video(
            self.path, self.max_fps, self.max_frames, self.clip, frame_size=self.frame_size, relative=self.clip_relative
        )


def _joined(builders: list, times: list[float], width: int, height: int) -> list[Conversation]:
    return [c for build in builders for c in build(times, width, height)]


def timed_conversations(
    annotations: list[dict],
    source: str,
    times: list[float],
    width: int,
    height: int,
    clip_start: float | None = None,
) -> list[Conversation]:
    """Pointing / counting / tracking annotations -> conversations, once the sampled frame times are known.
    clip_start: place points by Molmo2's clip-time rule (clip_times) rather than on the nearest frame."""
    conversations = []
    for annotation in annotations:
        try:
            task, label = annotation["task"], annotation["label"]
            if task == "tracking":
                frames: dict[float, dict[int, tuple[float, float]]] = {}
                for object_id, track in annotation["tracks"].items():
                    for t, x, y in track:
                        frames.setdefault(frame_time(t, times, source, clip_start), {})[int(object_id)] = (x, y)
                answer = format_tracks(sorted(frames.items()), label, width, height)
                conversations.append(Conversation([(TRACK_PROMPT.format(label=label), answer)], "tracking"))
                continue
            frames_points = by_frame(annotation.get("points", []), times, source, clip_start)
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
