"""Evaluation on a held-out folder with masks (ShapesWorld's format): questions -> answers -> metrics.

For every image: its caption, VQA, counting and pointing annotations become questions (Molmo2's prompts);
for every video: its VQA and pointing annotations; text-only rows: their chat turn. Answers are generated
greedily in batches and scored with metrics.py:

    caption_accuracy   the set of (colour, shape) the caption names == the objects in the image
    vqa_accuracy       exact match after normalisation         count_accuracy   the stated count (also ±1)
    point_f1           Hungarian-matched points inside masks  text_accuracy    exact match
    video_qa_accuracy, video_point_f1 (timestamps must match)

`blank=True` replaces every image by a blank one: the gap to the real score shows the model looks.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image

from ..data.datasets import CAPTION_PROMPTS
from ..data.jsonl import jsonl_files
from ..data.points import COUNT_PROMPT, POINT_PROMPT, VIDEO_POINT_PROMPT, parse_count, parse_points
from ..data.processor import Processor
from ..data.video_io import load_video
from ..models.nanomolmo2 import NanoMolmo2
from ..shapesworld.tasks import parse_caption
from .generation import Request, generate_answers
from .metrics import count_match, point_f1, video_point_f1, vqa_match

BLANK_COLOUR = (235, 235, 235)  # a light grey like ShapesWorld's backgrounds, with nothing on it


@dataclass
class Query:
    kind: str
    request: Request
    truth: object
    row: dict = field(default_factory=dict)
    root: Path = Path(".")


def _rows(folder: Path, name: str) -> list[tuple[dict, Path]]:
    return [
        (json.loads(line), file.parent)
        for file in jsonl_files(folder)
        if file.name == name
        for line in file.read_text().splitlines()
        if line.strip()
    ]


def image_queries(folder: Path, limit: int | None = None, per_kind: int = 2) -> list[Query]:
    queries = []
    for row, root in _rows(folder, "images.jsonl")[:limit]:
        image = root / row["image"]
        kinds = defaultdict(list)
        for annotation in row["annotations"]:
            kinds[annotation["task"]].append(annotation)
        truth = {(o["colour"], o["shape"]) for o in row["objects"]}
        queries.append(Query("caption", Request(CAPTION_PROMPTS[0], [image], max_new_tokens=48), truth, row, root))
        for a in kinds["vqa"][:per_kind]:
            question = a["question"] + "".join(f"\n{'AB'[i]}. {o}" for i, o in enumerate(a.get("options", [])))
            queries.append(Query("vqa", Request(question, [image], max_new_tokens=8), a["answer"], row, root))
        for a in kinds["counting"][:per_kind]:
            request = Request(COUNT_PROMPT.format(label=a["label"]), [image], max_new_tokens=72)
            queries.append(Query("count", request, a["count"], row, root))
        for a in kinds["pointing"][:per_kind]:
            request = Request(POINT_PROMPT.format(label=a["label"]), [image], max_new_tokens=72)
            queries.append(Query("point", request, a["points"], row, root))
    return queries


def video_queries(folder: Path, max_frames: int, limit: int | None = None, per_kind: int = 2) -> list[Query]:
    queries = []
    for row, root in _rows(folder, "videos.jsonl")[:limit]:
        video = load_video(root / row["video"], max_frames=max_frames)
        vqa = [a for a in row["annotations"] if a["task"] == "vqa"][:per_kind]
        pointing = [a for a in row["annotations"] if a["task"] == "pointing"][:per_kind]
        for a in vqa:
            question = a["question"] + "".join(f"\n{'AB'[i]}. {o}" for i, o in enumerate(a.get("options", [])))
            queries.append(Query("video_qa", Request(question, video=video, max_new_tokens=8), a["answer"], row, root))
        for a in pointing:
            request = Request(VIDEO_POINT_PROMPT.format(label=a["label"]), video=video, max_new_tokens=160)
            queries.append(Query("video_point", request, a["points"], row, root))
    return queries


def text_queries(folder: Path, limit: int | None = None) -> list[Query]:
    queries = []
    for row, root in _rows(folder, "text.jsonl")[:limit]:
        messages = row["annotations"][0]["messages"]
        queries.append(
            Query("text", Request(messages[0]["content"], max_new_tokens=16), messages[1]["content"], row, root)
        )
    return queries


def _object_ids(mask: np.ndarray, points) -> list[int]:
    """The objects under ground-truth points (each point is its object's center)."""
    return sorted({int(mask[int(y), int(x)]) for x, y in points} - {0})


def score(query: Query, answer: str) -> dict[str, float]:
    """The metric values of one answer (a dict, since pointing gives precision, recall and F1)."""
    if query.kind == "caption":
        return {"caption_accuracy": float(parse_caption(answer) == query.truth)}
    if query.kind in ("vqa", "video_qa", "text"):
        name = {"vqa": "vqa_accuracy", "video_qa": "video_qa_accuracy", "text": "text_accuracy"}[query.kind]
        return {name: float(vqa_match(answer, str(query.truth)))}
    if query.kind == "count":
        count = parse_count(answer)
        return {
            "count_accuracy": float(count_match(count, query.truth)),
            "count_within_one": float(count_match(count, query.truth, 1)),
        }
    width, height = query.row["width"], query.row["height"]
    if query.kind == "point":
        mask = np.array(PIL.Image.open(query.root / query.row["masks"]))
        predicted = [(x / 1000 * width, y / 1000 * height) for _, _, x, y in parse_points(answer)]
        scores = point_f1(predicted, mask, _object_ids(mask, query.truth))
        return {f"point_{k}": v for k, v in scores.items()}
    stored = np.load(query.root / query.row["masks"])
    masks, times = stored["masks"], stored["times"].tolist()
    targets = []
    for t, x, y in query.truth:
        frame = masks[int(np.argmin(np.abs(np.asarray(times) - t)))]
        targets += [(t, k) for k in _object_ids(frame, [(x, y)])]
    predicted = [(t, x / 1000 * width, y / 1000 * height) for t, _, x, y in parse_points(answer)]
    scores = video_point_f1(predicted, masks, times, targets)
    return {f"video_point_{k}": v for k, v in scores.items()}


def _blank(request: Request) -> Request:
    images = [PIL.Image.new("RGB", PIL.Image.open(p).size, BLANK_COLOUR) for p in request.images]
    return Request(request.question, images, request.video, request.max_new_tokens)


def evaluate(
    model: NanoMolmo2,
    processor: Processor,
    folder: str | Path,
    limit: int | None = None,
    max_frames: int = 16,
    blank: bool = True,
    batch_size: int = 16,
) -> tuple[dict[str, float], list[dict]]:
    """Metrics (means over queries) and the per-query records, optionally with the blank-image variants."""
    folder = Path(folder)
    queries = image_queries(folder, limit) + text_queries(folder, limit)
    if any(f.name == "videos.jsonl" for f in jsonl_files(folder)):
        queries += video_queries(folder, max_frames, limit)
    model.eval()
    answers = generate_answers(model, processor, [q.request for q in queries], batch_size)
    sums, counts, records = defaultdict(float), defaultdict(int), []
    for query, answer in zip(queries, answers, strict=True):
        values = score(query, answer)
        for k, v in values.items():
            sums[k] += v
            counts[k] += 1
        records.append({"kind": query.kind, "question": query.request.question, "answer": answer, **values})
    metrics = {k: sums[k] / counts[k] for k in sums}
    if blank:
        image_kinds = [q for q in queries if q.kind in ("caption", "vqa", "count", "point")]
        blank_answers = generate_answers(model, processor, [_blank(q.request) for q in image_kinds], batch_size)
        blank_sums, blank_counts = defaultdict(float), defaultdict(int)
        for query, answer in zip(image_kinds, blank_answers, strict=True):
            for k, v in score(query, answer).items():
                blank_sums[k] += v
                blank_counts[k] += 1
        metrics.update({f"blank_{k}": blank_sums[k] / blank_counts[k] for k in blank_sums})
    return metrics, records
