"""Converters of the image datasets for `nanomolmo2 prepare` (prepare.py): one function per dataset.

A converter gets a table row (and, for annotations, the (width, height) of each media file once fetched) and
returns annotations in the project's format (docs/DATA_FORMAT.md), points in pixels of the upright image.
It raises KeyError / ValueError / TypeError on a malformed row (reported with its file:line and skipped), or
SkipRow for a row left out on purpose.
"""

from __future__ import annotations

import re
from pathlib import Path

import PIL.Image

from ..data.datasets import MAX_IMAGES
from ..data.image_preprocessing import IMAGE_FORMATS, check_pixels
from ..data.points import format_points
from .tables import Media, SkipRow, percent_to_pixels, text, xy

Size = tuple[int, int]
EXIF_ORIENTATION = 0x0112
POINT_PLACEHOLDER = "<|POINT|>"


def image_size(path: Path) -> Size:
    """(width, height) of the upright image (EXIF orientation applied, as the loader does), from the header."""
    with PIL.Image.open(path, formats=IMAGE_FORMATS) as image:
        check_pixels(image.size, path)  # the loader would refuse it: so is it here, from the header
        width, height = image.size
        if image.getexif().get(EXIF_ORIENTATION) in (5, 6, 7, 8):  # a quarter turn swaps the sides
            width, height = height, width
    return width, height


def single_image(row: dict) -> list[Media]:
    return [Media(url=text(row, "image_url"), sha256=row.get("image_sha256") or None)]


def _count(row: dict, points: list) -> int:
    return int(row["count"]) if row.get("count") is not None else len(points)


def pixmo_cap(row: dict, sizes: list[Size]) -> list[dict]:
    """The caption, with the spoken transcripts it was written from (Molmo2's stage 1 trains on one of them)."""
    transcripts = [t for t in row.get("transcripts") or [] if isinstance(t, str) and t.strip()]
    return [
        {"task": "caption", "caption": text(row, "caption"), **({"transcripts": transcripts} if transcripts else {})}
    ]


def pixmo_points(row: dict, sizes: list[Size]) -> list[dict]:
    label, points = text(row, "label"), percent_to_pixels(xy(row.get("points")), *sizes[0])
    if row.get("collection_method") == "counting":
        return [{"task": "counting", "label": label, "points": points, "count": _count(row, points)}]
    return [{"task": "pointing", "label": label, "points": points}]


def pixmo_count(row: dict, sizes: list[Size]) -> list[dict]:
    points = [[round(x, 2), round(y, 2)] for x, y in xy(row.get("points"))]
    return [{"task": "counting", "label": text(row, "label"), "points": points, "count": _count(row, points)}]


def ask_model_anything(row: dict, sizes: list[Size]) -> list[dict]:
    return [{"task": "vqa", "question": text(row, "question").strip(), "answer": text(row, "answer")}]


# No `\s*` around the markers: at every position of a long run of spaces it would scan the whole run again
# (quadratic: 800 KB of spaces took 45 minutes); the turns are stripped instead.
_MARKER = re.compile(r"(\[USER\]|\[ASSISTANT\])")


def cap_qa(row: dict, sizes: list[Size]) -> list[dict]:
    """A question is plain, or earlier turns "[USER] q1 [ASSISTANT] a1 [USER] q2 [ASSISTANT]" + the answer."""
    question, answer = text(row, "question"), text(row, "answer")
    if "[USER]" not in question:
        return [{"task": "vqa", "question": question.strip(), "answer": answer}]
    question = question.rstrip()
    question = question.removesuffix("[ASSISTANT]")  # the answer's turn: what remains are the earlier turns
    parts = _MARKER.split(question)
    markers, turns = parts[1::2], [t.strip() for t in parts[2::2]]
    if parts[0].strip() or markers != ["[USER]", "[ASSISTANT]"] * (len(markers) // 2) + ["[USER]"]:
        raise ValueError("question: expected alternating '[USER] ...' / '[ASSISTANT] ...' turns")
    if not all(turns):
        raise ValueError("question: an empty turn")
    if len(turns) == 1:
        return [{"task": "vqa", "question": turns[0], "answer": answer}]
    messages = [{"role": ("user", "assistant")[i % 2], "content": t} for i, t in enumerate(turns + [answer])]
    return [{"task": "chat", "messages": messages}]


def point_explanations(row: dict, sizes: list[Size]) -> list[dict]:
    """parsed_response has one <|POINT|> per entry of points / inline_text: each becomes Molmo2's points
    (percent -> pixels -> the 0-1000 text form) around its inline text."""
    response = row.get("parsed_response")
    if response is None:
        raise SkipRow("no parsed_response")  # Molmo leaves these out too
    groups, inline = row.get("points") or [], row.get("inline_text") or []
    pieces = response.split(POINT_PLACEHOLDER)
    if not len(pieces) - 1 == len(groups) == len(inline):
        raise ValueError(f"{len(pieces) - 1} {POINT_PLACEHOLDER} for {len(groups)} point groups, {len(inline)} texts")
    width, height = sizes[0]
    answer = pieces[0]
    for group, label, piece in zip(groups, inline, pieces[1:], strict=True):
        points = [(x, y) for x, y in percent_to_pixels(xy(group), width, height)]
        answer += (format_points(points, label or "", width, height) if points else label or "") + piece
    return [{"task": "vqa", "question": text(row, "question").strip(), "answer": answer}]


def multi_image_media(row: dict) -> list[Media]:
    urls = row.get("image_urls")
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) and u for u in urls):
        raise ValueError("field 'image_urls' must be a non-empty list of URLs")
    if len(urls) > MAX_IMAGES:
        raise ValueError(f"{len(urls)} images, at most {MAX_IMAGES} per example")
    return [Media(url=u) for u in urls]


def multi_image_qa(row: dict, sizes: list[Size]) -> list[dict]:
    pairs = row.get("qa_pairs")
    if isinstance(pairs, dict):  # a `Sequence` of dicts is stored as a dict of lists
        pairs = [
            {"question": q, "answer": a}
            for q, a in zip(pairs.get("question") or [], pairs.get("answer") or [], strict=True)
        ]
    if not pairs:
        raise ValueError("no qa_pairs")
    return [{"task": "vqa", "question": text(p, "question").strip(), "answer": text(p, "answer")} for p in pairs]
