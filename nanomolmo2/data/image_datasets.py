"""Image datasets: rows of the project's JSONL format (docs/DATA_FORMAT.md) -> chat examples.

A row holds one image (or several, or none) and its annotations; a dataset keeps the annotations of the
tasks it serves and turns each into a conversation with Molmo2's prompts and answer formats:

    caption    "Describe this image." (one of a few phrasings)       -> the caption
    pointing   "Point to {label}\\nPlease say 'There are none.' ..."  -> <points coords="1 1 500 250">label</points>
    counting   "How many {label} are there?"                          -> point-then-count, count-then-point, or "3"
    vqa        the question (+ lettered options)                       -> the answer
    chat       the user turns                                          -> the assistant turns

A malformed JSONL line (not an object with a non-empty list of annotation objects) is reported with its file and
line number and skipped; so is an annotation that cannot be used (a missing field, a wrong type, an empty answer).
"""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from .examples import Conversation, Example
from .image_preprocessing import load_image
from .points import COUNT_PROMPT, NO_MATCH, POINT_PROMPT, format_points

log = logging.getLogger(__name__)

CAPTION_PROMPTS = (
    "Describe this image.",
    "Describe this image in detail.",
    "Write a caption for this image.",
    "What is in this image? Describe every object.",
)
MAX_IMAGES = 5  # Molmo2's limit per example


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


def _choice(options: tuple[str, ...], key: str) -> str:
    """A stable pseudo-random pick (the same row always gets the same phrasing; crc32 is stable across runs)."""
    return options[zlib.crc32(key.encode()) % len(options)]


def image_size(row: Row) -> tuple[int, int]:
    """(width, height) of the row's first image, EXIF-corrected; from the row when it says, else the file."""
    if "width" in row.data and "height" in row.data:
        return int(row.data["width"]), int(row.data["height"])
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
        prompt = _choice(CAPTION_PROMPTS, f"{row.source}:{index}")
        return Conversation([(prompt, answer_text(annotation["caption"]))], style="caption")
    if task == "pointing":
        label, points = annotation["label"], [tuple(p[:2]) for p in annotation["points"]]
        answer = format_points(points, label, *image_size(row)) if points else NO_MATCH
        return Conversation([(POINT_PROMPT.format(label=label), answer)], style="pointing")
    if task == "counting":
        label, points = annotation["label"], [tuple(p[:2]) for p in annotation.get("points", [])]
        count, style = int(annotation.get("count", len(points))), annotation.get("style", "point_count")
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
    """Rows of one or more JSONL files that have annotations of `tasks`; item i -> an `Example`.

    max_conversations: at most this many annotations per example (a stable subset), to bound its length.
    """

    tasks: tuple[str, ...] = ("caption", "pointing", "counting", "vqa", "chat")

    def __init__(self, path: str | Path, tasks: tuple[str, ...] | None = None, max_conversations: int = 8) -> None:
        self.tasks = tuple(tasks or self.tasks)
        self.max_conversations = max_conversations
        # Rows with a video belong to VideoDataset: without their video, their answers cannot be learnt.
        self.rows, self.malformed_lines = read_rows(path, self.tasks, video=False)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Example:
        row = self.rows[i]
        annotations = annotation_subset(row, self.tasks, self.max_conversations)
        conversations = []
        for k, annotation in enumerate(annotations):
            try:
                conversations.append(conversation(annotation, row, k))
            except (KeyError, ValueError, TypeError, IndexError) as e:
                log.warning("skipped a malformed annotation in %s: %r", row.source, e)
        images = row.media("images") or row.media("image")
        if len(images) > MAX_IMAGES:
            raise ValueError(f"{row.source}: {len(images)} images, at most {MAX_IMAGES} per example")
        return Example(conversations=conversations, images=images, source=row.source)


class CaptioningDataset(JsonlDataset):
    tasks = ("caption",)


class PointingDataset(JsonlDataset):
    tasks = ("pointing", "counting")


class VQADataset(JsonlDataset):
    tasks = ("vqa",)


class TextDataset(JsonlDataset):
    tasks = ("chat",)
